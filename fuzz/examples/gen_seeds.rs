//! Writes seed corpora for the fuzz targets into `corpus/<target>/` (next to this package's
//! Cargo.toml), from realistic inputs: CountySim records, a signed and chained batch, and the
//! default policy bundle signed by the fixed fuzz key. Deterministic; re-running overwrites.
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds

use std::fs;
use std::path::{Path, PathBuf};

use tongbu_shared::checkpoint::{self, Checkpoint, LogProof, Trusted};
use tongbu_shared::merkle::{self, MemoryLog};
use tongbu_shared::policy::{PolicyBundle, default_policy};
use tongbu_shared::protocol::{BatchRequest, Heartbeat};
use tongbu_shared::sample::CountySim;
use tongbu_shared::signed::Signed;
use tongbu_shared::{AgentId, CountyCode, Digest, Envelope, KeyPair};

/// Must match `fuzz_targets/policy_bundle.rs` and `fuzz_targets/log_proof.rs`.
const HUB_SEED: [u8; 32] = [0x42; 32];
const AGENT_SEED: [u8; 32] = [0x07; 32];

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    fs::write(dir.join(name), bytes)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let county = CountyCode::parse("430112").map_err(|e| e.0)?;

    // record_parse: single records, plain and with anomalies (invalid supplier codes etc.).
    let mut sim = CountySim::new(county.clone(), 1, 2025);
    let mut odd = CountySim::new(county.clone(), 2, 2025).with_anomalies();
    let dir = root.join("record_parse");
    for i in 0..12 {
        write(
            &dir,
            &format!("sim-{i:02}.json"),
            sim.next_json().as_bytes(),
        )?;
        write(
            &dir,
            &format!("anomaly-{i:02}.json"),
            odd.next_json().as_bytes(),
        )?;
    }

    // submission: JSON Lines, a JSON array, a BOM-prefixed file, a pretty-printed multi-line one.
    let dir = root.join("submission");
    let mut sim = CountySim::new(county.clone(), 3, 2025).with_anomalies();
    let lines = sim.batch(8);
    write(&dir, "lines.jsonl", lines.as_bytes())?;
    let values: Vec<serde_json::Value> = lines
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    write(
        &dir,
        "array.json",
        serde_json::to_string(&values)?.as_bytes(),
    )?;
    write(
        &dir,
        "pretty.json",
        serde_json::to_string_pretty(&values)?.as_bytes(),
    )?;
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(sim.batch(3).as_bytes());
    write(&dir, "bom.jsonl", &bom)?;

    // batch_decode: a signed, hash-chained batch, and an empty heartbeat-only one.
    let dir = root.join("batch_decode");
    let agent_key = KeyPair::from_seed(&AGENT_SEED)?;
    let agent = AgentId::new(&county, [0xde, 0xad, 0xbe, 0xef]);
    let mut sim = CountySim::new(county.clone(), 4, 2025).with_anomalies();
    let mut prev = Digest::GENESIS;
    let mut envelopes = Vec::new();
    for seq in 1..=5 {
        let env = Envelope::sign(
            &agent_key,
            agent.clone(),
            seq,
            prev,
            sim.next_json().into_bytes(),
        );
        prev = env.hash();
        envelopes.push(env);
    }
    let heartbeat = Heartbeat {
        head_seq: 5,
        queue_depth: 2,
        agent_version: "0.1.0".into(),
        last_error: Some("hub unreachable: connection refused".into()),
        outcome_cursor: 17,
        log_size: 0,
    };
    let batch = BatchRequest {
        heartbeat: heartbeat.clone(),
        envelopes,
    };
    write(&dir, "batch.json", &serde_json::to_vec(&batch)?)?;
    write(
        &dir,
        "batch-pretty.json",
        &serde_json::to_vec_pretty(&batch)?,
    )?;
    let empty = BatchRequest {
        heartbeat: Heartbeat {
            last_error: None,
            ..heartbeat
        },
        envelopes: Vec::new(),
    };
    write(&dir, "heartbeat.json", &serde_json::to_vec(&empty)?)?;

    // policy_bundle: the default bundle signed by the fixed key, and the bare policy document.
    let dir = root.join("policy_bundle");
    let hub_key = KeyPair::from_seed(&HUB_SEED)?;
    let bundle = PolicyBundle::new(3, 1_767_225_600_000, default_policy());
    let signed = Signed::sign(&hub_key, &bundle)?;
    write(&dir, "signed-bundle.json", &serde_json::to_vec(&signed)?)?;
    write(
        &dir,
        "policy-doc.json",
        &serde_json::to_vec_pretty(&default_policy())?,
    )?;

    // log_proof: receipts' log proofs over a real 37-entry tree, signed by the fixed key, with
    // the agent's view (its head, and the checkpoint of 20 entries it trusted before).
    let dir = root.join("log_proof");
    let mut log = MemoryLog::default();
    let mut mine = Vec::new();
    for i in 0..37u64 {
        let (who, seq) = if i % 3 == 0 {
            (agent.clone(), mine.len() as u64 + 1)
        } else {
            (AgentId::new(&county, [0, 0, 0, 1]), i)
        };
        let hash = Digest::of(&[&i.to_be_bytes()]);
        let index = log.push(checkpoint::leaf_hash(&who, seq, &hash).0);
        if who == agent {
            mine.push((seq, hash, index));
        }
    }
    for (name, (seq, hash, index), from) in [
        ("head", mine[12], 20u64),
        ("first", mine[0], 0),
        ("same-size", mine[5], 37),
    ] {
        let checkpoint = Checkpoint {
            tree_size: 37,
            root: Digest(merkle::root(&log, 37).map_err(|e| format!("{e:?}"))?),
            hub_time_ms: 1_767_225_600_000,
        };
        let trusted = (from > 0)
            .then(|| merkle::root(&log, from).map(|root| (from, root)))
            .transpose()
            .map_err(|e| format!("{e:?}"))?;
        let consistency = if from > 0 {
            merkle::consistency_proof(&log, from, 37).map_err(|e| format!("{e:?}"))?
        } else {
            Vec::new()
        };
        let proof = LogProof {
            checkpoint: Signed::sign(&hub_key, &checkpoint)?,
            head_index: Some(index),
            inclusion: merkle::inclusion_proof(&log, index, 37)
                .map_err(|e| format!("{e:?}"))?
                .into_iter()
                .map(Digest)
                .collect(),
            consistency_from: from,
            consistency: consistency.into_iter().map(Digest).collect(),
        };
        let case = serde_json::json!({
            "agent": agent,
            "acked_seq": seq,
            "head_hash": hash,
            "trusted": trusted.map(|(size, root)| Trusted {
                tree_size: size,
                root: Digest(root),
                hub_time_ms: 1_767_225_000_000,
            }),
            "proof": proof,
        });
        write(&dir, &format!("{name}.json"), &serde_json::to_vec(&case)?)?;
    }

    println!("seed corpora written under {}", root.display());
    Ok(())
}
