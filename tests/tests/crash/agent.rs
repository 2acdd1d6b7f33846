//! Agents killed with SIGKILL at random points of their work, each time restarted: every
//! record whose submission was answered "stored" reaches the hub exactly once, a submission cut
//! short is stored whole or not at all (and if stored, syncs too), the chains verify and each
//! county's ledger equals the sum of its records.
//!
//! Four agents (one county each) run in parallel against one hub. Each cycle starts the agent,
//! submits a few records (HTTP intake, sometimes the CLI), maybe leaves one submission in flight,
//! and kills the agent on an observed trigger: at once, when the in-flight submission's commit
//! shows in the outbox, or when the hub's watermark passes a random seq the agent is still
//! uploading. After each kill the outbox and the hub are read directly and checked; a submission
//! found not stored is sent again, as a county system retries what it never heard back about.

use std::path::Path;
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use tongbu_tests::crash::{
    Budget, CliSubmit, Heard, HubWatch, Rng, Totals, check_agent, has_open, ledger, outbox_head,
    outbox_state, poll, post_records, spawn_agent_unready,
};
use tongbu_tests::{Agent, Hub, records};

const COUNTIES: [(&str, &str); 4] = [
    ("430112", "望城区"),
    ("431281", "洪江市"),
    ("431002", "北湖区"),
    ("430702", "武陵区"),
];
const YEAR: i32 = 2024;
/// Most records one cycle consumes (3 submissions of 12 before the trigger, 60 in flight).
const MAX_PER_CYCLE: usize = 3 * 12 + 60;

/// What triggered the kills and where they landed, as read back from the outbox and the hub.
#[derive(Debug, Default, Clone, Copy)]
struct Landed {
    kills: usize,
    /// Killed while starting, before READY: at once, or once it had its outbox open.
    at_startup: usize,
    /// Killed at once after READY, after the last reply or with a submission just sent.
    at_once: usize,
    /// Killed when the in-flight submission's commit showed in the outbox (or it returned).
    on_commit: usize,
    /// Killed when the hub's watermark passed a random seq the agent was uploading.
    on_hub_ack: usize,
    /// A submission in flight was not stored (killed during intake, parse or signing).
    in_flight_lost: usize,
    /// A submission in flight was committed, but its submitter never heard so.
    in_flight_unheard: usize,
    /// A submission in flight completed before the kill.
    in_flight_heard: usize,
    /// `tongbu-agent submit` processes killed along with the agent.
    cli_killed: usize,
    /// The hub committed a batch whose receipt the agent never recorded: killed after the
    /// hub's commit, or while its request was still being ingested.
    receipt_lost: usize,
    /// The agent held records the hub had not committed yet (upload pending or in flight).
    upload_pending: usize,
    records: usize,
}

impl Landed {
    fn add(&mut self, o: &Landed) {
        self.kills += o.kills;
        self.at_startup += o.at_startup;
        self.at_once += o.at_once;
        self.on_commit += o.on_commit;
        self.on_hub_ack += o.on_hub_ack;
        self.in_flight_lost += o.in_flight_lost;
        self.in_flight_unheard += o.in_flight_unheard;
        self.in_flight_heard += o.in_flight_heard;
        self.cli_killed += o.cli_killed;
        self.receipt_lost += o.receipt_lost;
        self.upload_pending += o.upload_pending;
        self.records += o.records;
    }
}

/// A submission under way when the kill comes.
enum InFlight {
    Http(JoinHandle<Heard>),
    Cli(CliSubmit),
}

impl InFlight {
    fn is_finished(&mut self) -> bool {
        match self {
            InFlight::Http(h) => h.is_finished(),
            InFlight::Cli(c) => c.has_exited(),
        }
    }
}

/// One agent, its county's record stream and what it is known to hold.
struct Driven {
    county: &'static str,
    agent: Agent,
    rng: Rng,
    stream: Vec<String>,
    next: usize,
    /// A submission found not stored after a kill, sent again before anything new.
    retry: Option<Vec<String>>,
    /// The bodies the outbox must hold, in seq order: every submission known to be stored.
    stored: Vec<String>,
    /// Hub rows 1..=hub_checked were already compared with `stored`.
    hub_checked: u64,
    submissions: u64,
    landed: Landed,
}

impl Driven {
    fn take(&mut self, n: u64) -> Vec<String> {
        if let Some(lines) = self.retry.take() {
            return lines;
        }
        let end = (self.next + n as usize).min(self.stream.len());
        let lines = self.stream[self.next..end].to_vec();
        self.next = end;
        lines
    }

    /// Notes a submission that was answered "stored" with `seqs`.
    fn heard_stored(&mut self, lines: Vec<String>, seqs: &[u64]) -> Result<()> {
        let first = self.stored.len() as u64 + 1;
        let want: Vec<u64> = (first..first + lines.len() as u64).collect();
        ensure!(
            seqs == want,
            "agent {}: stored at seqs {seqs:?}, expected {want:?}",
            self.agent.agent_id
        );
        self.stored.extend(lines);
        Ok(())
    }

    fn submit_now(&mut self, url: &str) -> Result<()> {
        let n = self.rng.range(1, 12);
        let lines = self.take(n);
        if lines.is_empty() {
            return Ok(());
        }
        self.submissions += 1;
        let heard = if self.rng.chance(20) {
            CliSubmit::start(&self.agent, &lines, self.submissions)?.finish()
        } else {
            post_records(url, &lines)
        };
        match heard {
            Heard::Stored(seqs) => self.heard_stored(lines, &seqs),
            Heard::Nothing(why) => bail!(
                "agent {} is running but a submission failed: {why}",
                self.agent.agent_id
            ),
        }
    }

    /// One start, some work and one SIGKILL, then the post-mortem.
    fn cycle(&mut self, watch: &mut HubWatch) -> Result<()> {
        self.landed.kills += 1;
        if self.rng.chance(8) {
            let mut child = spawn_agent_unready(&self.agent)?;
            if self.rng.chance(50) && Path::new("/proc/self/fd").exists() {
                let outbox = std::fs::canonicalize(self.agent.data_dir().join("outbox.db"))?;
                let pid = child.id();
                poll("the starting agent to open its outbox", || {
                    let exited = matches!(child.try_wait(), Ok(Some(_)));
                    (exited || has_open(pid, &outbox)).then_some(())
                })?;
            }
            let _ = child.kill();
            let _ = child.wait();
            self.landed.at_startup += 1;
            return self.post_mortem(None, watch);
        }
        let batch = *self.rng.pick(&["2", "5", "10", "50"]);
        self.agent.start_with(&["--batch-size", batch])?;
        let url = self.agent.intake_url().context("intake url")?;
        for _ in 0..self.rng.range(0, 3) {
            self.submit_now(&url)?;
        }
        let known = self.stored.len() as u64;
        let mut in_flight = None;
        if self.rng.chance(55) {
            let n = self.rng.range(1, 60);
            let lines = self.take(n);
            if !lines.is_empty() {
                self.submissions += 1;
                let f = if self.rng.chance(25) {
                    InFlight::Cli(CliSubmit::start(&self.agent, &lines, self.submissions)?)
                } else {
                    let url = url.clone();
                    let body = lines.clone();
                    InFlight::Http(std::thread::spawn(move || post_records(&url, &body)))
                };
                in_flight = Some((lines, f));
            }
        }

        // The trigger: at once, on the in-flight commit, or on the hub's watermark.
        let roll = self.rng.range(0, 99);
        if roll < 30 {
            // Now: right after the last reply, or while the in-flight request is young.
            self.landed.at_once += 1;
        } else if roll < 55 && in_flight.is_some() {
            self.landed.on_commit += 1;
            let f = in_flight.as_mut().map(|(_, f)| f);
            let f = f.context("in flight")?;
            poll("the in-flight commit to show in the outbox", || {
                let moved = outbox_head(&self.agent).is_some_and(|h| h > known);
                (moved || f.is_finished()).then_some(())
            })?;
        } else {
            let id = self.agent.agent_id.clone();
            let at_hub = watch.acked_of(&id).unwrap_or(0);
            if known <= at_hub {
                self.landed.at_once += 1;
            } else {
                self.landed.on_hub_ack += 1;
                let target = self.rng.range(at_hub + 1, known);
                poll("the hub's watermark to pass the target", || {
                    watch.acked_of(&id).filter(|&a| a >= target)
                })?;
            }
        }
        self.agent.kill9();

        let heard = match in_flight {
            None => None,
            Some((lines, InFlight::Http(h))) => {
                Some((lines, h.join().expect("intake request thread")))
            }
            Some((lines, InFlight::Cli(mut c))) => {
                // Mostly the machine went down with everything on it; sometimes only the
                // agent service died and the CLI run finishes.
                if self.rng.chance(70) {
                    if !c.has_exited() {
                        self.landed.cli_killed += 1;
                    }
                    c.kill9();
                }
                Some((lines, c.finish()))
            }
        };
        self.post_mortem(heard, watch)
    }

    /// Reads the dead agent's outbox and the hub and checks them against what is known.
    fn post_mortem(
        &mut self,
        in_flight: Option<(Vec<String>, Heard)>,
        watch: &mut HubWatch,
    ) -> Result<()> {
        let id = self.agent.agent_id.clone();
        let known = self.stored.len() as u64;
        let s = outbox_state(&self.agent, known)?;
        ensure!(
            s.count == s.head_seq,
            "agent {id}: the outbox has a gap ({} rows, head {})",
            s.count,
            s.head_seq
        );
        ensure!(
            s.head_seq >= known,
            "agent {id}: LOST stored records: the outbox ends at seq {}, {known} were stored",
            s.head_seq
        );
        let extra: Vec<&[u8]> = s.rows_after.iter().map(|r| r.2.as_slice()).collect();
        match in_flight {
            None => ensure!(
                extra.is_empty(),
                "agent {id}: {} rows appeared that nobody submitted",
                extra.len()
            ),
            Some((lines, Heard::Stored(seqs))) => {
                self.landed.in_flight_heard += 1;
                ensure!(
                    same_bodies(&extra, &lines),
                    "agent {id}: the outbox does not hold the {} records answered stored",
                    lines.len()
                );
                self.heard_stored(lines, &seqs)?;
            }
            Some((lines, Heard::Nothing(_))) => {
                if extra.is_empty() {
                    self.landed.in_flight_lost += 1;
                    self.retry = Some(lines);
                } else if same_bodies(&extra, &lines) {
                    self.landed.in_flight_unheard += 1;
                    self.stored.extend(lines);
                } else {
                    bail!(
                        "agent {id}: a submission of {} records was cut short and {} of them \
                         are stored (all or nothing)",
                        lines.len(),
                        extra.len()
                    );
                }
            }
        }

        // The hub holds a prefix of the agent's chain, and its watermark says how long.
        let at_hub = watch.stored_after(&id, self.hub_checked)?;
        for (row, seq) in at_hub.iter().zip(self.hub_checked + 1..) {
            ensure!(row.0 == seq, "agent {id}: the hub has a gap at seq {seq}");
            let want = self.stored.get(seq as usize - 1).map(String::as_bytes);
            ensure!(
                want == Some(row.2.as_slice()),
                "agent {id}: the hub's seq {seq} is not the agent's record"
            );
        }
        self.hub_checked += at_hub.len() as u64;
        let hub_acked = watch.acked_of(&id).unwrap_or(0);
        ensure!(
            hub_acked >= self.hub_checked,
            "agent {id}: the hub stores through seq {} but its watermark is {hub_acked}",
            self.hub_checked
        );
        ensure!(
            s.acked_seq <= hub_acked,
            "agent {id}: the agent recorded an acknowledgement through {} but the hub holds {hub_acked}",
            s.acked_seq
        );
        if hub_acked > s.acked_seq {
            self.landed.receipt_lost += 1;
        }
        if self.stored.len() as u64 > hub_acked {
            self.landed.upload_pending += 1;
        }
        Ok(())
    }

    /// Restarts the agent for good, sends what is still unsent and checks the end state.
    fn finish(&mut self, hub: &Hub) -> Result<()> {
        self.agent.start()?;
        let url = self.agent.intake_url().context("intake url")?;
        if let Some(lines) = self.retry.take() {
            match post_records(&url, &lines) {
                Heard::Stored(seqs) => self.heard_stored(lines, &seqs)?,
                Heard::Nothing(why) => bail!("resubmission failed: {why}"),
            }
        }
        let head = self.agent.wait_synced()?;
        ensure!(head == self.stored.len() as u64, "head {head}");
        check_agent(hub, &self.agent, &self.stored)?;
        let want = Totals::of(&self.stored).expected_reply(self.county, YEAR);
        let got = ledger(hub, self.county, YEAR)?;
        ensure!(
            got == want,
            "county {}: the ledger is {got}, the records sum to {want}",
            self.county
        );
        self.landed.records = self.stored.len();
        ensure!(
            self.agent.proc.take().context("running")?.terminate()?,
            "agent exits cleanly"
        );
        Ok(())
    }
}

fn same_bodies(rows: &[&[u8]], lines: &[String]) -> bool {
    rows.len() == lines.len() && rows.iter().zip(lines).all(|(r, l)| *r == l.as_bytes())
}

/// Runs `kills` cycles on one agent and the final checks; the error names the agent and seed.
fn drive(
    hub: &Hub,
    county: &'static str,
    agent: Agent,
    kills: usize,
    seed: u64,
    index: u64,
) -> Landed {
    let mut d = Driven {
        county,
        agent,
        rng: Rng::fork(seed, index),
        stream: records(county, index + 1, kills * MAX_PER_CYCLE + 1)
            .lines()
            .map(str::to_owned)
            .collect(),
        next: 0,
        retry: None,
        stored: Vec::new(),
        hub_checked: 0,
        submissions: 0,
        landed: Landed::default(),
    };
    let mut watch = HubWatch::new(hub);
    let result = (0..kills)
        .try_for_each(|_| d.cycle(&mut watch))
        .and_then(|()| d.finish(hub));
    if let Err(e) = result {
        panic!(
            "agent {} (county {county}), seed {seed}, after {} kills: {e:#}\nagent log (tail):\n{}",
            d.agent.agent_id,
            d.landed.kills,
            tail(&d.agent.log(), 40)
        );
    }
    d.landed
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[test]
fn agents_killed_at_random_points_lose_and_duplicate_nothing() {
    let _turn = crate::one_at_a_time();
    let budget = Budget::from_env("agents_killed_at_random_points_lose_and_duplicate_nothing");
    let started = Instant::now();
    let hub = Hub::start().unwrap();
    let agents: Vec<Agent> = COUNTIES
        .iter()
        .map(|(code, name)| {
            hub.add_county(code, name);
            Agent::enrolled(&hub, code).unwrap()
        })
        .collect();
    let n = COUNTIES.len();
    let mut total = Landed::default();
    std::thread::scope(|scope| {
        let hub = &hub;
        let workers: Vec<_> = agents
            .into_iter()
            .zip(COUNTIES)
            .enumerate()
            .map(|(i, (agent, (county, _)))| {
                let kills = budget.agent_kills / n + usize::from(i < budget.agent_kills % n);
                scope.spawn(move || drive(hub, county, agent, kills, budget.seed, i as u64))
            })
            .collect();
        for w in workers {
            total.add(&w.join().expect("agent worker"));
        }
    });
    assert_eq!(total.kills, budget.agent_kills);
    eprintln!(
        "agent crash test: seed {}, {} kills over {n} agents in {:.1?}, {} records at the hub \
         exactly once, chains verify, ledgers equal the sums; kills landed: {total:?}",
        budget.seed,
        total.kills,
        started.elapsed(),
        total.records
    );
}
