//! Tamper evidence: altered records, forged signatures, resends and equivocation are each
//! caught, answered with a distinct error, and change nothing they should not.

use tongbu_shared::{Digest, Envelope, KeyPair};
use tongbu_tests::{Agent, Hub, RawAgent, Reply, records};

fn bodies(county: &str, seed: u64, n: usize) -> Vec<String> {
    records(county, seed, n)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_record_altered_on_the_agents_disk_is_caught_by_verify_and_refused_by_the_hub() {
    let hub = Hub::start().unwrap();
    hub.add_county("430112", "望城区");
    let agent = Agent::enrolled(&hub, "430112").unwrap();
    agent.submit(&records("430112", 1, 20)).expect_ok("submit");
    assert!(
        agent
            .cli(&["verify"])
            .expect_ok("verify")
            .stdout
            .starts_with("ok: 20 records verify")
    );

    // Someone with disk access raises a payment's amount in the outbox.
    let db = agent.db().unwrap();
    let body: Vec<u8> = db
        .query_row("SELECT body FROM envelopes WHERE seq = 7", [], |r| r.get(0))
        .unwrap();
    let text = String::from_utf8(body).unwrap();
    let altered = text.replacen("\"rev\":1", "\"rev\":2", 1);
    assert_ne!(altered, text);
    db.execute(
        "UPDATE envelopes SET body = ?1 WHERE seq = 7",
        [altered.as_bytes()],
    )
    .unwrap();
    drop(db);

    let out = agent.cli(&["verify"]);
    assert_eq!(
        out.code,
        Some(1),
        "verify must fail: {} {}",
        out.stdout,
        out.stderr
    );
    assert!(
        out.stdout.starts_with("seq 7:"),
        "first bad seq named: {}",
        out.stdout
    );

    let sync = agent.cli(&["sync", "--once"]);
    assert!(!sync.ok, "an altered record must not sync");
    assert!(
        format!("{}{}", sync.stdout, sync.stderr).contains("bad_signature"),
        "{} {}",
        sync.stdout,
        sync.stderr
    );
    // The hub stored nothing past the intact prefix and nothing altered.
    let stored = agent.stored().unwrap();
    let at_hub = hub.stored(&agent.agent_id).unwrap();
    assert!(at_hub.len() < 7, "hub stored {} records", at_hub.len());
    assert_eq!(&stored[..at_hub.len()], &at_hub[..]);
    let status = agent.status().unwrap();
    assert!(
        status["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("bad_signature"),
        "{status}"
    );
}

#[test]
fn forged_signatures_and_forged_requests_are_refused() {
    let hub = Hub::start().unwrap();
    hub.add_county("431281", "洪江市");
    let raw = RawAgent::enroll(&hub.url(), &hub.issue_token("431281"), [1; 32]).unwrap();
    let good = raw.chain(0, Digest::GENESIS, &bodies("431281", 1, 3));

    // An envelope signed by some other key.
    let forger = KeyPair::from_seed(&[66; 32]).unwrap();
    let mut forged = good.clone();
    forged[1] = Envelope::sign(
        &forger,
        raw.agent_id.clone(),
        2,
        good[0].hash(),
        good[1].body.clone(),
    );
    let Reply { status, body, .. } = raw.send(&forged).unwrap();
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "bad_signature");
    assert_eq!(body["error"]["seq"], 2);
    assert!(
        hub.stored(raw.agent_id.as_str()).unwrap().is_empty(),
        "nothing of a refused batch is stored"
    );

    // A valid envelope in a request signed by another key.
    let impostor = RawAgent {
        key: forger,
        agent_id: raw.agent_id.clone(),
        hub_url: raw.hub_url.clone(),
        hub_key: raw.hub_key,
    };
    let Reply { status, body, .. } = impostor.send(&good).unwrap();
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "bad_request_signature");

    // A batch for an agent the hub never enrolled.
    let stranger = RawAgent {
        key: KeyPair::from_seed(&[67; 32]).unwrap(),
        agent_id: tongbu_shared::AgentId::parse("431281-00000000").unwrap(),
        hub_url: raw.hub_url.clone(),
        hub_key: raw.hub_key,
    };
    let Reply { status, body, .. } = stranger.send(&[]).unwrap();
    assert!(status == 404 || status == 401, "{status} {body}");
    assert_eq!(body["error"]["code"], "unknown_agent");

    // Malformed JSON and oversized bodies get their own codes.
    let path = tongbu_shared::protocol::batches_path(&raw.agent_id);
    let Reply { status, body, .. } = raw.request("POST", &path, b"{not json".to_vec()).unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("malformed_json")),
        "{body}"
    );
    // An oversized body is refused from its Content-Length, before the hub reads it.
    let reply = oversized_request(
        &hub.url(),
        &path,
        tongbu_shared::protocol::MAX_REQUEST_BYTES + 1,
    );
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("\"body_too_large\""), "{reply}");

    // The good chain is still accepted afterwards.
    let reply = raw.send(&good).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(raw.receipt(&reply).unwrap().acked_seq, 3);
}

#[test]
fn a_resent_batch_is_acknowledged_again_and_stored_once() {
    let hub = Hub::start().unwrap();
    hub.add_county("430112", "望城区");
    let raw = RawAgent::enroll(&hub.url(), &hub.issue_token("430112"), [2; 32]).unwrap();
    let chain = raw.chain(0, Digest::GENESIS, &bodies("430112", 2, 5));
    let reply = raw.send(&chain).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let first = raw.receipt(&reply).unwrap();
    assert_eq!(first.acked_seq, 5);
    assert_eq!(first.head_hash, chain[4].hash());
    assert!(first.outcomes.iter().all(|o| !o.duplicate));

    let reply = raw.send(&chain).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let again = raw.receipt(&reply).unwrap();
    assert_eq!((again.acked_seq, again.head_hash), (5, chain[4].hash()));
    assert_eq!(again.outcomes.len(), 5);
    assert!(again.outcomes.iter().all(|o| o.duplicate));

    // A batch that overlaps what the hub holds and continues it is fine too.
    let more = raw.chain(5, chain[4].hash(), &bodies("430112", 3, 2));
    let overlap: Vec<Envelope> = chain[3..].iter().chain(&more).cloned().collect();
    let reply = raw.send(&overlap).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(raw.receipt(&reply).unwrap().acked_seq, 7);
    assert_eq!(hub.stored(raw.agent_id.as_str()).unwrap().len(), 7);

    // A gap is refused and tells the agent where to resume.
    let beyond = raw.chain(8, Digest::of(&[b"x"]), &bodies("430112", 4, 1));
    let Reply { status, body, .. } = raw.send(&beyond).unwrap();
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "chain_gap");
    assert_eq!(body["error"]["acked_seq"], 7);
}

#[test]
fn an_equivocating_agent_is_quarantined_and_reported() {
    let hub = Hub::start().unwrap();
    hub.add_county("431281", "洪江市");
    let raw = RawAgent::enroll(&hub.url(), &hub.issue_token("431281"), [3; 32]).unwrap();
    let chain = raw.chain(0, Digest::GENESIS, &bodies("431281", 5, 3));
    assert_eq!(raw.send(&chain).unwrap().status, 200);

    // A different, validly signed record at seq 2: two histories signed by one key.
    let fork = raw.chain(1, chain[0].hash(), &bodies("431281", 6, 1));
    assert_ne!(fork[0].hash(), chain[1].hash());
    let Reply { status, body, .. } = raw.send(&fork).unwrap();
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "equivocation");

    let row = hub.agent_row(raw.agent_id.as_str()).unwrap().unwrap();
    assert_eq!(row["state"], "quarantined");
    // The hub kept its original history and the evidence.
    let stored = hub.stored(raw.agent_id.as_str()).unwrap();
    assert_eq!(stored.len(), 3);
    assert_eq!(stored[1].1, chain[1].hash().0.to_vec());
    let alerts: i64 = hub
        .db()
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM alerts WHERE agent_id = ?1",
            [raw.agent_id.as_str()],
            |r| r.get(0),
        )
        .unwrap();
    assert!(alerts >= 1);

    // From now on even honest batches are refused until an admin lifts the quarantine.
    let next = raw.chain(3, chain[2].hash(), &bodies("431281", 7, 1));
    let Reply { status, body, .. } = raw.send(&next).unwrap();
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "agent_quarantined");
    assert_eq!(hub.stored(raw.agent_id.as_str()).unwrap().len(), 3);
}

/// Sends only the head of a request announcing a `len`-byte body and returns the raw reply.
fn oversized_request(hub_url: &str, path: &str, len: usize) -> String {
    use std::io::{Read, Write};
    let addr = hub_url.trim_start_matches("http://");
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).unwrap();
    let mut reply = Vec::new();
    let _ = sock.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}
