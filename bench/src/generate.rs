//! `tongbu-bench generate`: a hub data directory the size of a province, made through the
//! hub's real ingest path (in process, [`crate::feed`]) so that its envelopes, ledger, held
//! set, violations and entities are exactly what a hub fed by real agents would hold.
//!
//! Counties are Hunan's county-level divisions (GB/T 2260 codes and names), taken round robin
//! over the prefectures so a small hub still spans several of them. Every fourth county runs
//! two agents. Each agent sends its fiscal-2024 records, then its fiscal-2025 ones, from
//! [`CountySim::with_anomalies`]: about a third of the projects break a rule, arrive out of
//! order (held, then released) or are amended. The same `--seed` makes the same records.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::Semaphore;
use tongbu_hub::store::Role;
use tongbu_hub::{Hub, SystemClock};
use tongbu_shared::rules::Totals;
use tongbu_shared::sample::CountySim;
use tongbu_shared::{CountyCode, Envelope};

use crate::feed::BenchAgent;

/// Hunan's 122 county-level divisions (districts, county-level cities, counties and
/// autonomous counties), grouped by prefecture: Changsha 4301 … Loudi 4313, Xiangxi 4331.
pub const HUNAN: [(&str, &str); 122] = [
    ("430102", "芙蓉区"),
    ("430103", "天心区"),
    ("430104", "岳麓区"),
    ("430105", "开福区"),
    ("430111", "雨花区"),
    ("430112", "望城区"),
    ("430121", "长沙县"),
    ("430181", "浏阳市"),
    ("430182", "宁乡市"),
    ("430202", "荷塘区"),
    ("430203", "芦淞区"),
    ("430204", "石峰区"),
    ("430211", "天元区"),
    ("430212", "渌口区"),
    ("430223", "攸县"),
    ("430224", "茶陵县"),
    ("430225", "炎陵县"),
    ("430281", "醴陵市"),
    ("430302", "雨湖区"),
    ("430304", "岳塘区"),
    ("430321", "湘潭县"),
    ("430381", "湘乡市"),
    ("430382", "韶山市"),
    ("430405", "珠晖区"),
    ("430406", "雁峰区"),
    ("430407", "石鼓区"),
    ("430408", "蒸湘区"),
    ("430412", "南岳区"),
    ("430421", "衡阳县"),
    ("430422", "衡南县"),
    ("430423", "衡山县"),
    ("430424", "衡东县"),
    ("430426", "祁东县"),
    ("430481", "耒阳市"),
    ("430482", "常宁市"),
    ("430502", "双清区"),
    ("430503", "大祥区"),
    ("430511", "北塔区"),
    ("430522", "新邵县"),
    ("430523", "邵阳县"),
    ("430524", "隆回县"),
    ("430525", "洞口县"),
    ("430527", "绥宁县"),
    ("430528", "新宁县"),
    ("430529", "城步苗族自治县"),
    ("430581", "武冈市"),
    ("430582", "邵东市"),
    ("430602", "岳阳楼区"),
    ("430603", "云溪区"),
    ("430611", "君山区"),
    ("430621", "岳阳县"),
    ("430623", "华容县"),
    ("430624", "湘阴县"),
    ("430626", "平江县"),
    ("430681", "汨罗市"),
    ("430682", "临湘市"),
    ("430702", "武陵区"),
    ("430703", "鼎城区"),
    ("430721", "安乡县"),
    ("430722", "汉寿县"),
    ("430723", "澧县"),
    ("430724", "临澧县"),
    ("430725", "桃源县"),
    ("430726", "石门县"),
    ("430781", "津市市"),
    ("430802", "永定区"),
    ("430811", "武陵源区"),
    ("430821", "慈利县"),
    ("430822", "桑植县"),
    ("430902", "资阳区"),
    ("430903", "赫山区"),
    ("430921", "南县"),
    ("430922", "桃江县"),
    ("430923", "安化县"),
    ("430981", "沅江市"),
    ("431002", "北湖区"),
    ("431003", "苏仙区"),
    ("431021", "桂阳县"),
    ("431022", "宜章县"),
    ("431023", "永兴县"),
    ("431024", "嘉禾县"),
    ("431025", "临武县"),
    ("431026", "汝城县"),
    ("431027", "桂东县"),
    ("431028", "安仁县"),
    ("431081", "资兴市"),
    ("431102", "零陵区"),
    ("431103", "冷水滩区"),
    ("431122", "东安县"),
    ("431123", "双牌县"),
    ("431124", "道县"),
    ("431125", "江永县"),
    ("431126", "宁远县"),
    ("431127", "蓝山县"),
    ("431128", "新田县"),
    ("431129", "江华瑶族自治县"),
    ("431181", "祁阳市"),
    ("431202", "鹤城区"),
    ("431221", "中方县"),
    ("431222", "沅陵县"),
    ("431223", "辰溪县"),
    ("431224", "溆浦县"),
    ("431225", "会同县"),
    ("431226", "麻阳苗族自治县"),
    ("431227", "新晃侗族自治县"),
    ("431228", "芷江侗族自治县"),
    ("431229", "靖州苗族侗族自治县"),
    ("431230", "通道侗族自治县"),
    ("431281", "洪江市"),
    ("431302", "娄星区"),
    ("431321", "双峰县"),
    ("431322", "新化县"),
    ("431381", "冷水江市"),
    ("431382", "涟源市"),
    ("433101", "吉首市"),
    ("433122", "泸溪县"),
    ("433123", "凤凰县"),
    ("433124", "花垣县"),
    ("433125", "保靖县"),
    ("433126", "古丈县"),
    ("433127", "永顺县"),
    ("433130", "龙山县"),
];

/// The fiscal years generated, in the order each agent sends them.
pub const YEARS: [i32; 2] = [2024, 2025];

/// What to generate.
#[derive(Debug, Clone)]
pub struct Options {
    pub data_dir: PathBuf,
    pub records: usize,
    pub counties: usize,
    pub seed: u64,
    /// Records per batch an agent sends.
    pub batch: usize,
    /// Batches being signed, verified or written at once, over all agents.
    pub in_flight: usize,
    /// Print progress lines on stderr.
    pub progress: bool,
}

/// What was generated.
#[derive(Debug)]
pub struct Summary {
    pub records: usize,
    pub counties: usize,
    pub agents: usize,
    pub seconds: f64,
    /// Accepted, held and rejected over every county and year (from the hub's ledger).
    pub totals: Totals,
    /// An operator API key for the data directory's read API.
    pub api_key: String,
}

/// `n` of the counties in [`HUNAN`], round robin over the prefectures (the first four digits).
pub fn pick_counties(n: usize) -> Vec<(&'static str, &'static str)> {
    let mut prefectures: Vec<Vec<(&str, &str)>> = Vec::new();
    for c in HUNAN {
        match prefectures.last_mut() {
            Some(p) if p[0].0[..4] == c.0[..4] => p.push(c),
            _ => prefectures.push(vec![c]),
        }
    }
    let mut out = Vec::with_capacity(n);
    for round in 0.. {
        if out.len() >= n || out.len() == HUNAN.len() {
            break;
        }
        for p in &prefectures {
            if let Some(c) = p.get(round)
                && out.len() < n
            {
                out.push(*c);
            }
        }
    }
    out
}

/// One agent's feed: its record sources (one per fiscal year) and how many records each has
/// left to give.
struct Feed {
    agent: BenchAgent,
    sims: Vec<(CountySim, usize)>,
}

impl Feed {
    fn left(&self) -> usize {
        self.sims.iter().map(|(_, n)| n).sum()
    }

    /// The next `n` records, signed (2024's first, then 2025's).
    fn next_batch(&mut self, n: usize) -> Vec<Envelope> {
        let mut bodies = Vec::with_capacity(n);
        for (sim, left) in &mut self.sims {
            while *left > 0 && bodies.len() < n {
                bodies.push(sim.next_json().into_bytes());
                *left -= 1;
            }
        }
        self.agent.sign(bodies)
    }
}

/// Builds the data directory; see the module docs.
pub fn run(opts: &Options) -> anyhow::Result<Summary> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(generate(opts))
}

fn ensure_empty(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        anyhow::bail!(
            "{} is not empty: generate makes a new hub data directory",
            dir.display()
        );
    }
    Ok(())
}

async fn generate(opts: &Options) -> anyhow::Result<Summary> {
    anyhow::ensure!(
        (1..=HUNAN.len()).contains(&opts.counties),
        "--counties must be 1..={}",
        HUNAN.len()
    );
    anyhow::ensure!(opts.records > 0, "--records must be at least 1");
    ensure_empty(&opts.data_dir)?;
    let begin = Instant::now();
    let hub = Hub::open(&opts.data_dir, Arc::new(SystemClock))?;

    let counties = pick_counties(opts.counties);
    let mut plan: Vec<(usize, CountyCode, usize)> = Vec::new(); // (county index, code, agent no.)
    for (ci, (code, name)) in counties.iter().enumerate() {
        let county = CountyCode::parse(code)?;
        hub.add_county(county.clone(), (*name).to_owned()).await?;
        let agents = if ci % 4 == 0 { 2 } else { 1 };
        for a in 0..agents {
            plan.push((ci, county.clone(), a));
        }
    }
    let agents = plan.len();
    let base = opts.seed % 1_000_000;
    let mut feeds = Vec::with_capacity(agents);
    for (i, (ci, county, a)) in plan.into_iter().enumerate() {
        let quota = opts.records / agents + usize::from(i < opts.records % agents);
        let mut key_seed = [7u8; 32];
        key_seed[..8].copy_from_slice(&opts.seed.to_le_bytes());
        key_seed[8..12].copy_from_slice(&(ci as u32).to_le_bytes());
        key_seed[12] = a as u8;
        let agent = BenchAgent::enroll(&hub, &county, key_seed).await?;
        // A sim's record ids carry `seed % 1000`, so the sims of one county differ there.
        let earlier = quota * 2 / 5;
        let sims = YEARS
            .iter()
            .zip([earlier, quota - earlier])
            .enumerate()
            .map(|(y, (&year, n))| {
                let seed = base * 1_000_000 + ci as u64 * 1000 + (a * YEARS.len() + y) as u64 + 1;
                (
                    CountySim::new(county.clone(), seed, year).with_anomalies(),
                    n,
                )
            })
            .collect();
        feeds.push(Feed { agent, sims });
    }

    // Every agent sends its batches in order, all agents at once; a fair semaphore bounds the
    // batches in flight, so memory stays small and the counties advance together.
    let gate = Arc::new(Semaphore::new(opts.in_flight.max(1)));
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut feed in feeds {
        let (hub, gate, done) = (hub.clone(), gate.clone(), done.clone());
        let (batch, total, progress) = (opts.batch.max(1), opts.records, opts.progress);
        tasks.spawn(async move {
            while feed.left() > 0 {
                let _permit = gate.acquire().await?;
                let n = batch.min(feed.left());
                let (back, envelopes) = tokio::task::spawn_blocking(move || {
                    let envelopes = feed.next_batch(n);
                    (feed, envelopes)
                })
                .await?;
                feed = back;
                feed.agent.send(&hub, envelopes).await?;
                let before = done.fetch_add(n, Ordering::Relaxed);
                if progress && before * 20 / total != (before + n) * 20 / total {
                    let secs = started.elapsed().as_secs_f64();
                    eprintln!(
                        "generate: {:>3}%  {:>9} records  {secs:>7.1} s  {:>8.0} records/s",
                        (before + n) * 100 / total,
                        before + n,
                        (before + n) as f64 / secs
                    );
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(finished) = tasks.join_next().await {
        finished??;
    }
    hub.db().flush().await?;

    let mut totals = Totals::default();
    for (code, _) in &counties {
        for year in YEARS {
            let t = hub.ledger(CountyCode::parse(code)?, year).await?;
            totals = totals
                .plus(&t)
                .ok_or_else(|| anyhow::anyhow!("ledger totals overflow"))?;
        }
    }
    let api_key = hub
        .create_api_key(Role::Operator)
        .await?
        .expose()
        .to_owned();
    Ok(Summary {
        records: opts.records,
        counties: counties.len(),
        agents,
        seconds: begin.elapsed().as_secs_f64(),
        totals,
        api_key,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use tongbu_hub::store::ViolationFilter;

    #[test]
    fn the_table_has_unique_codes_within_hunan() {
        let mut codes: Vec<&str> = HUNAN.iter().map(|c| c.0).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), 122);
        for (code, name) in HUNAN {
            assert!(CountyCode::parse(code).is_ok(), "{code}");
            assert!(code.starts_with("43") && !name.is_empty());
        }
        let five: Vec<&str> = pick_counties(5).iter().map(|c| &c.0[..4]).collect();
        assert_eq!(five, ["4301", "4302", "4303", "4304", "4305"]);
        assert_eq!(pick_counties(122).len(), 122);
    }

    /// A small hub made by the generator answers the read API consistently: every record is
    /// acknowledged, and accepted + held + rejected over the counties and years is the number
    /// of records sent.
    #[test]
    fn a_small_generated_hub_is_consistent() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("hub");
        let opts = Options {
            data_dir: data_dir.clone(),
            records: 3000,
            counties: 5,
            seed: 7,
            batch: 250,
            in_flight: 4,
            progress: false,
        };
        let summary = run(&opts).unwrap();
        assert_eq!(
            (summary.records, summary.counties, summary.agents),
            (3000, 5, 7)
        );
        assert!(!summary.api_key.is_empty());
        assert!(run(&opts).is_err(), "a used data directory is refused");

        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let hub = Hub::open(&data_dir, Arc::new(SystemClock)).unwrap();
            let agents = hub.agents().await.unwrap();
            assert_eq!(agents.len(), 7);
            let acked: u64 = agents.iter().map(|a| a.acked_seq).sum();
            assert_eq!(acked, 3000);
            assert!(agents.iter().all(|a| a.lag == 0 && a.acked_seq > 0));

            let (mut sum, mut violations) = (0i64, 0usize);
            for (code, _) in pick_counties(5) {
                let county = CountyCode::parse(code).unwrap();
                assert!(agents.iter().any(|a| a.county == county));
                for year in YEARS {
                    let t = hub.ledger(county.clone(), year).await.unwrap();
                    assert!(t.accepted > 0, "{code} {year}: {t:?}");
                    sum += t.accepted + t.held + t.rejected;
                }
                violations += hub
                    .violations(ViolationFilter {
                        county,
                        year: None,
                        rule: None,
                        limit: 1000,
                    })
                    .await
                    .unwrap()
                    .len();
            }
            assert_eq!(sum, 3000);
            let t = summary.totals;
            assert_eq!(t.accepted + t.held + t.rejected, 3000);
            assert!(t.rejected > 0 && violations > 0, "anomalies show: {t:?}");
            assert!(
                hub.check_api_key(Some(&format!("Bearer {}", summary.api_key)))
                    .await
                    .is_ok()
            );
        });
    }
}
