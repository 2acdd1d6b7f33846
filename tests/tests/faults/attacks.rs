//! Attacks on a real hub through its wire protocol (and on the agent's loopback intake): each
//! is refused with its own error code and changes nothing, or — for hostile text inside
//! well-formed, validly signed records — is stored verbatim and judged like any record.
//! `tamper.rs` in the e2e suite covers forged signatures, unknown agents, plain malformed
//! JSON, oversized bodies, equivocation and resends; these are the rest.

use serde_json::Value;
use tongbu_shared::protocol::{BatchRequest, Heartbeat, batches_path, watermark_path};
use tongbu_shared::signed::RequestAuth;
use tongbu_shared::{Digest, Envelope};
use tongbu_tests::{Agent, Hub, RawAgent, Reply, records, wait_for};

use crate::{assert_same_chain, hub_healthy, hub_state, schema_objects, wait_clean};

const HERE: &str = "430112";
const THERE: &str = "431281";
/// Enough nesting to overflow any recursive parser that does not bound its depth.
const DEPTH: usize = 100_000;

fn hub_with_counties() -> Hub {
    let hub = Hub::start().unwrap();
    hub.add_county(HERE, "望城区");
    hub.add_county(THERE, "洪江市");
    hub
}

fn bodies(county: &str, seed: u64, n: usize) -> Vec<String> {
    records(county, seed, n)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn fresh_nonce() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut b).unwrap();
    hex::encode(b)
}

/// A request signed once, to be sent as often as a test likes.
struct SignedRequest {
    method: &'static str,
    path: String,
    body: Vec<u8>,
    auth: RequestAuth,
}

impl SignedRequest {
    fn new(raw: &RawAgent, method: &'static str, path: String, body: Vec<u8>, ts: i64) -> Self {
        let auth = RequestAuth::sign(
            &raw.key,
            &raw.agent_id,
            method,
            &path,
            ts,
            fresh_nonce(),
            &body,
        );
        SignedRequest {
            method,
            path,
            body,
            auth,
        }
    }

    fn batch(raw: &RawAgent, envelopes: &[Envelope], ts: i64) -> Self {
        let body = serde_json::to_vec(&batch_request(envelopes)).unwrap();
        SignedRequest::new(raw, "POST", batches_path(&raw.agent_id), body, ts)
    }

    fn send(&self, hub_url: &str) -> Reply {
        let client = tongbu_tests::http();
        let url = format!("{hub_url}{}", self.path);
        let mut req = match self.method {
            "GET" => client.get(url),
            _ => client
                .post(url)
                .header("content-type", "application/json")
                .body(self.body.clone()),
        };
        for (name, value) in self.auth.headers() {
            req = req.header(name, value);
        }
        let resp = req.send().unwrap();
        let status = resp.status().as_u16();
        let raw = resp.text().unwrap();
        let body = serde_json::from_str(&raw).unwrap_or_else(|_| Value::String(raw.clone()));
        Reply { status, body, raw }
    }
}

fn batch_request(envelopes: &[Envelope]) -> BatchRequest {
    BatchRequest {
        heartbeat: Heartbeat {
            head_seq: envelopes.last().map_or(0, |e| e.seq),
            queue_depth: 0,
            agent_version: "test".into(),
            last_error: None,
            outcome_cursor: 0,
            log_size: 0,
        },
        envelopes: envelopes.to_vec(),
    }
}

fn code(reply: &Reply) -> (u16, &str) {
    (
        reply.status,
        reply.body["error"]["code"].as_str().unwrap_or_default(),
    )
}

/// `[[[…]]]`, `depth` deep.
fn nested(depth: usize) -> Vec<u8> {
    let mut out = vec![b'['; depth];
    out.extend(std::iter::repeat_n(b']', depth));
    out
}

fn ledger(hub: &Hub, county: &str) -> Value {
    let (status, v) = hub
        .get(&format!("/api/v1/ledger?county={county}&year=2024"))
        .unwrap();
    assert_eq!(status, 200, "{v}");
    v
}

/// A hand-driven agent of `county` that already synced `n` clean records.
fn raw_with_records(hub: &Hub, county: &str, seed: u8, n: usize) -> (RawAgent, Vec<Envelope>) {
    let raw = RawAgent::enroll(&hub.url(), &hub.issue_token(county), [seed; 32]).unwrap();
    let chain = raw.chain(0, Digest::GENESIS, &bodies(county, u64::from(seed), n));
    let reply = raw.send(&chain).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    (raw, chain)
}

#[test]
fn a_replayed_request_is_refused_and_changes_nothing() {
    // The hub remembers the (agent, nonce) of every signed request within the clock-skew
    // window (`hub::replay`), so the exact same signed request sent twice is refused.
    let hub = hub_with_counties();
    let (raw, chain) = raw_with_records(&hub, HERE, 31, 3);
    let more = raw.chain(3, chain[2].hash(), &bodies(HERE, 32, 2));
    let request = SignedRequest::batch(&raw, &more, now_secs());
    let first = request.send(&hub.url());
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(raw.receipt(&first).unwrap().acked_seq, 5);
    let before = hub_state(&hub);

    let again = request.send(&hub.url());
    assert_eq!(code(&again), (401, "replayed_request"), "{}", again.raw);
    assert_eq!(hub_state(&hub), before, "a replay changes nothing");

    // A replayed read is refused as well: a captured request proves nothing twice.
    let watermark = SignedRequest::new(
        &raw,
        "GET",
        watermark_path(&raw.agent_id),
        Vec::new(),
        now_secs(),
    );
    assert_eq!(watermark.send(&hub.url()).status, 200);
    let again = watermark.send(&hub.url());
    assert_eq!(code(&again), (401, "replayed_request"), "{}", again.raw);
    assert_eq!(hub_state(&hub), before);
}

#[test]
fn a_request_signed_ten_minutes_ago_is_refused_with_the_skew() {
    let hub = hub_with_counties();
    let (raw, chain) = raw_with_records(&hub, HERE, 33, 2);
    let before = hub_state(&hub);
    let more = raw.chain(2, chain[1].hash(), &bodies(HERE, 34, 2));
    let stale = SignedRequest::batch(&raw, &more, now_secs() - 600);
    let reply = stale.send(&hub.url());
    assert_eq!(code(&reply), (401, "clock_skew"), "{}", reply.raw);
    let skew = reply.body["error"]["skew_seconds"].as_i64().unwrap();
    assert!((595..=700).contains(&skew), "skew_seconds {skew}");
    // Ten minutes ahead is refused the same way, with the sign showing the direction.
    let ahead = SignedRequest::batch(&raw, &more, now_secs() + 600);
    let reply = ahead.send(&hub.url());
    assert_eq!(code(&reply), (401, "clock_skew"), "{}", reply.raw);
    let skew = reply.body["error"]["skew_seconds"].as_i64().unwrap();
    assert!((-700..=-595).contains(&skew), "skew_seconds {skew}");
    assert_eq!(hub_state(&hub), before, "nothing stored");
}

/// Signs in to the console as an admin and revokes `agent` with a reason, as a person would.
fn revoke_in_console(hub: &Hub, agent: &str) {
    let password = "faults-admin-password-2024";
    hub.add_console_user("faults-admin", "admin", password);
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap();
    let form = |fields: &[(&str, &str)]| -> String {
        fields
            .iter()
            .map(|(k, v)| format!("{k}={}", url_encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    };
    let resp = client
        .post(format!("{}/console/login", hub.url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("username", "faults-admin"),
            ("password", password),
            ("next", "/console/agents"),
        ]))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303, "login");
    let cookie = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("tongbu_session="))
        .and_then(|v| v.split(';').next())
        .unwrap()
        .to_owned();
    let page = client
        .get(format!("{}/console/agents", hub.url()))
        .header("cookie", &cookie)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let csrf = page
        .split(r#"name="csrf" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF token on the agents page")
        .to_owned();
    let resp = client
        .post(format!("{}/console/agents/{agent}/revoke", hub.url()))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("reason", "key stolen (faults test)"),
            ("csrf", &csrf),
        ]))
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    assert_eq!(status, 303, "revoke: {}", resp.text().unwrap_or_default());
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn a_revoked_agent_is_refused_everything() {
    let hub = hub_with_counties();
    let (raw, chain) = raw_with_records(&hub, HERE, 35, 3);
    revoke_in_console(&hub, raw.agent_id.as_str());
    let row = hub.agent_row(raw.agent_id.as_str()).unwrap().unwrap();
    assert_eq!(row["state"], "revoked", "{row}");
    let before = hub_state(&hub);

    let more = raw.chain(3, chain[2].hash(), &bodies(HERE, 36, 2));
    let reply = raw.send(&more).unwrap();
    assert_eq!(code(&reply), (403, "agent_revoked"), "{}", reply.raw);
    let reply = raw.send(&[]).unwrap();
    assert_eq!(
        code(&reply),
        (403, "agent_revoked"),
        "heartbeat: {}",
        reply.raw
    );
    let reply = raw
        .request("GET", &watermark_path(&raw.agent_id), Vec::new())
        .unwrap();
    assert_eq!(
        code(&reply),
        (403, "agent_revoked"),
        "watermark: {}",
        reply.raw
    );
    let reply = raw
        .request("GET", tongbu_shared::protocol::POLICY_PATH, Vec::new())
        .unwrap();
    assert_eq!(
        code(&reply),
        (403, "agent_revoked"),
        "policy: {}",
        reply.raw
    );
    assert_eq!(hub_state(&hub), before, "nothing stored");
}

#[test]
fn another_countys_records_are_stored_rejected_and_never_counted() {
    let hub = hub_with_counties();
    let raw = RawAgent::enroll(&hub.url(), &hub.issue_token(HERE), [37; 32]).unwrap();
    let foreign = bodies(THERE, 37, 8);
    let chain = raw.chain(0, Digest::GENESIS, &foreign);
    let reply = raw.send(&chain).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let receipt = raw.receipt(&reply).unwrap();
    assert_eq!(receipt.acked_seq, 8);
    for o in &receipt.outcomes {
        assert_eq!(o.outcome.as_str(), "rejected", "{o:?}");
        assert!(o.codes.iter().any(|c| c == "COUNTY_MISMATCH"), "{o:?}");
    }
    // Kept verbatim, as evidence.
    let stored = hub.stored(raw.agent_id.as_str()).unwrap();
    assert_eq!(stored.len(), 8);
    for (row, body) in stored.iter().zip(&foreign) {
        assert_eq!(row.2, body.as_bytes());
    }
    // Never counted, in either county.
    for county in [HERE, THERE] {
        let l = ledger(&hub, county);
        for field in [
            "budget_approved_fen",
            "contracted_fen",
            "paid_fen",
            "accepted",
            "held",
        ] {
            assert_eq!(l[field], 0, "{county} {field}: {l}");
        }
    }
    // The ledger's rows may count the rejections, never money or acceptances.
    let db = hub.db().unwrap();
    let counted: i64 = db
        .query_row(
            "SELECT COALESCE(SUM(budget_approved_fen + contracted_fen + paid_fen + accepted + held), 0) FROM ledger",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(counted, 0, "nothing counted");
    let rejected: Vec<(String, i64)> = db
        .prepare("SELECT county, SUM(rejected) FROM ledger GROUP BY county")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    eprintln!("rejections counted per county: {rejected:?}");
}

#[test]
fn deeply_nested_json_is_refused_and_the_hub_stays_healthy() {
    let hub = hub_with_counties();
    let (raw, chain) = raw_with_records(&hub, HERE, 39, 2);
    let before = hub_state(&hub);
    let path = batches_path(&raw.agent_id);

    // As the whole (validly signed) request body.
    let deep = SignedRequest::new(&raw, "POST", path.clone(), nested(DEPTH), now_secs());
    let reply = deep.send(&hub.url());
    assert_eq!(code(&reply), (400, "malformed_json"), "{}", reply.raw);
    // Nested objects, and nesting inside the expected shape.
    let mut objects = b"{\"heartbeat\":".to_vec();
    for _ in 0..DEPTH {
        objects.extend_from_slice(b"{\"a\":");
    }
    objects.extend(std::iter::repeat_n(b'}', DEPTH + 1));
    let deep = SignedRequest::new(&raw, "POST", path.clone(), objects, now_secs());
    let reply = deep.send(&hub.url());
    assert_eq!(code(&reply), (400, "malformed_json"), "{}", reply.raw);
    // At the unauthenticated enrollment endpoint.
    let resp = tongbu_tests::http()
        .post(format!(
            "{}{}",
            hub.url(),
            tongbu_shared::protocol::ENROLL_PATH
        ))
        .header("content-type", "application/json")
        .body(nested(DEPTH))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let v: Value = resp.json().unwrap();
    assert_eq!(v["error"]["code"], "malformed_json", "{v}");

    assert!(hub_healthy(&hub));
    assert_eq!(hub_state(&hub), before, "nothing stored");
    // The hub still takes good work.
    let more = raw.chain(2, chain[1].hash(), &bodies(HERE, 40, 2));
    let reply = raw.send(&more).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[test]
fn a_signed_record_with_a_deeply_nested_body_is_kept_as_malformed() {
    // An envelope body is the agent's signed bytes, carried as raw JSON: a hostile agent can
    // sign any JSON. Nested 8,000 deep (as deep as fits in an envelope's 16 KiB; far deeper
    // than serde_json's 128 or SQLite's 1,000 levels) it must still be stored (it is part of
    // the chain) and rejected as MALFORMED_RECORD, and the hub must stay healthy.
    let hub = hub_with_counties();
    let raw = RawAgent::enroll(&hub.url(), &hub.issue_token(HERE), [41; 32]).unwrap();
    let mut body = String::from(r#"{"kind":"payment","note":"#);
    body.push_str(std::str::from_utf8(&nested(8_000)).unwrap());
    body.push('}');
    let mut bodies_ = vec![body];
    bodies_.extend(bodies(HERE, 41, 1));
    let chain = raw.chain(0, Digest::GENESIS, &bodies_);
    let reply = raw.send(&chain).unwrap();
    assert_eq!(
        reply.status,
        200,
        "{}",
        &reply.raw[..reply.raw.len().min(2000)]
    );
    let receipt = raw.receipt(&reply).unwrap();
    assert_eq!(receipt.acked_seq, 2);
    assert_eq!(receipt.outcomes[0].outcome.as_str(), "rejected");
    assert_eq!(receipt.outcomes[0].codes, ["MALFORMED_RECORD"]);
    assert_eq!(receipt.outcomes[1].outcome.as_str(), "accepted");
    let stored = hub.stored(raw.agent_id.as_str()).unwrap();
    assert_eq!(stored[0].2, bodies_[0].as_bytes());
    assert!(hub_healthy(&hub));
    // The read API can show it.
    let (status, v) = hub
        .get(&format!("/api/v1/records/{}/1", raw.agent_id))
        .unwrap();
    assert_eq!(status, 200, "{v}");
}

#[test]
fn invalid_utf8_is_refused_and_changes_nothing() {
    let hub = hub_with_counties();
    let (raw, chain) = raw_with_records(&hub, HERE, 43, 2);
    let before = hub_state(&hub);
    let path = batches_path(&raw.agent_id);

    let garbage = b"{\"heartbeat\":\"\xff\xfe\xfd\",\"envelopes\":[]}".to_vec();
    let reply =
        SignedRequest::new(&raw, "POST", path.clone(), garbage, now_secs()).send(&hub.url());
    assert_eq!(code(&reply), (400, "malformed_json"), "{}", reply.raw);

    // Invalid UTF-8 inside an envelope's body, in an otherwise well-formed, signed batch.
    let more = raw.chain(2, chain[1].hash(), &bodies(HERE, 44, 1));
    let mut bytes = serde_json::to_vec(&batch_request(&more)).unwrap();
    let at = bytes
        .windows(4)
        .position(|w| w == b"\"id\"")
        .expect("the body's id field")
        + 6;
    bytes[at] = 0xff;
    let reply = SignedRequest::new(&raw, "POST", path, bytes, now_secs()).send(&hub.url());
    assert_eq!(code(&reply), (400, "malformed_json"), "{}", reply.raw);

    // Unauthenticated, at enrollment.
    let resp = tongbu_tests::http()
        .post(format!(
            "{}{}",
            hub.url(),
            tongbu_shared::protocol::ENROLL_PATH
        ))
        .body(b"{\"token\":\"\xc3\x28\"}".to_vec())
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert!(hub_healthy(&hub));
    assert_eq!(hub_state(&hub), before, "nothing stored");
}

/// Text that would do damage if any layer built SQL by pasting strings.
const INJECTIONS: &[&str] = &[
    "'; DROP TABLE envelopes; --",
    "\" OR 1=1; --",
    "x'); DELETE FROM ledger; --",
    "1; UPDATE agents SET state='revoked' WHERE 1=1; --",
    "%' UNION SELECT sqlite_version(), 1, 2; --",
    "北湖区'; DROP TABLE record_index; /*",
    "Robert'); DROP TABLE counties;-- 服务中心",
];

/// Fills every free-text field a record of this kind allows with an injection string.
fn inject(line: &str, n: usize) -> String {
    let mut v: serde_json::Map<String, Value> = serde_json::from_str(line).unwrap();
    let fields: &[&str] = match v["kind"].as_str().unwrap() {
        "budget_line" => &["title"],
        "contract" => &["supplier_name", "title"],
        "payment" => &["voucher_no", "note"],
        "evaluation" => &["evaluator"],
        other => panic!("kind {other}"),
    };
    for (i, field) in fields.iter().enumerate() {
        let text = INJECTIONS[(n + i) % INJECTIONS.len()];
        v.insert((*field).to_owned(), Value::String(text.to_owned()));
    }
    serde_json::to_string(&v).unwrap()
}

#[test]
fn sql_in_every_text_field_is_stored_verbatim_and_judged_normally() {
    let hub = hub_with_counties();
    let schema = schema_objects(&hub);
    // The same records twice: with injected text for one county, and clean (same fields, same
    // structure) for the other; both must be judged the same way.
    let lines = bodies(HERE, 45, 60);
    let hostile: Vec<String> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| inject(l, i))
        .collect();
    let clean: Vec<String> = lines
        .iter()
        .map(|l| {
            let mut v: serde_json::Map<String, Value> = serde_json::from_str(l).unwrap();
            v.insert("county".into(), Value::String(THERE.into()));
            serde_json::to_string(&v).unwrap()
        })
        .collect();
    let mut a = Agent::enrolled(&hub, HERE).unwrap();
    let mut b = Agent::enrolled(&hub, THERE).unwrap();
    a.submit(&hostile.join("\n"))
        .expect_ok("submit hostile text");
    b.submit(&clean.join("\n")).expect_ok("submit clean twin");
    a.start().unwrap();
    b.start().unwrap();
    wait_clean(&a, 60);
    wait_clean(&b, 60);
    assert_same_chain(&hub, &a);
    for (row, line) in hub.stored(&a.agent_id).unwrap().iter().zip(&hostile) {
        assert_eq!(row.2, line.as_bytes(), "stored verbatim");
    }

    let verdicts = |agent: &Agent| -> Vec<(String, String)> {
        let db = hub.db().unwrap();
        let mut stmt = db
            .prepare("SELECT outcome, codes FROM envelopes WHERE agent_id = ?1 ORDER BY seq")
            .unwrap();
        stmt.query_map([&agent.agent_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    };
    let hostile_verdicts = verdicts(&a);
    assert_eq!(hostile_verdicts, verdicts(&b), "judged like the clean twin");
    assert!(hostile_verdicts.iter().any(|(o, _)| o == "accepted"));
    let (mut la, mut lb) = (ledger(&hub, HERE), ledger(&hub, THERE));
    la["county"] = Value::Null;
    lb["county"] = Value::Null;
    assert_eq!(la, lb, "the same totals");

    // Every table is still there and the database is sound.
    assert_eq!(schema_objects(&hub), schema);
    let check: String = hub
        .db()
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let agents = hub.agents().unwrap();
    assert!(agents.iter().all(|a| a["state"] == "active"), "{agents:?}");
    // The read API shows the text as it came.
    let (status, v) = hub
        .get(&format!("/api/v1/records/{}/2", a.agent_id))
        .unwrap();
    assert_eq!(status, 200, "{v}");
    assert!(
        INJECTIONS
            .iter()
            .any(|i| v["body"].to_string().contains(&i[..10])),
        "{v}"
    );
    let (status, v) = hub
        .get(&format!("/api/v1/violations?county={HERE}"))
        .unwrap();
    assert_eq!(status, 200, "{v}");
}

#[test]
fn the_agents_intake_refuses_nested_and_invalid_utf8_bodies() {
    let hub = hub_with_counties();
    let mut agent = Agent::enrolled(&hub, HERE).unwrap();
    agent.start().unwrap();
    let url = agent.intake_url().unwrap();
    let post = |path: &str, body: Vec<u8>| {
        let resp = tongbu_tests::http()
            .post(format!("{url}{path}"))
            .body(body)
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().unwrap())
    };
    post("/records", records(HERE, 47, 3).into_bytes());
    let before = agent.stored().unwrap();
    assert_eq!(before.len(), 3);

    let mut in_record = br#"{"kind":"payment","note":"#.to_vec();
    in_record.extend(nested(DEPTH));
    in_record.push(b'}');
    let mut objects = Vec::new();
    for _ in 0..DEPTH {
        objects.extend_from_slice(b"{\"a\":");
    }
    objects.extend(std::iter::repeat_n(b'}', DEPTH));
    let mut bad_text = records(HERE, 48, 1).into_bytes();
    let at = bad_text.windows(4).position(|w| w == b"\"id\"").unwrap() + 6;
    bad_text[at] = 0xff;
    let hostile: [(&str, Vec<u8>); 5] = [
        ("nested arrays", nested(DEPTH)),
        ("nested objects", objects),
        ("nesting inside a record", in_record),
        ("invalid UTF-8 in a record", bad_text),
        ("invalid UTF-8 alone", b"\xff\xfe\xfd".to_vec()),
    ];
    for path in ["/records", "/check"] {
        for (what, body) in &hostile {
            let (status, text) = post(path, body.clone());
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{path} {what}: not JSON ({e}): {text}"));
            match (path, status) {
                // `/check` reports what is wrong as findings; `/records` refuses.
                ("/check", 200) => {
                    assert_eq!(v["ok"], false, "{path} {what}: {v}");
                    assert!(
                        !v["findings"].as_array().unwrap().is_empty(),
                        "{path} {what}: {v}"
                    );
                }
                (_, 400) => assert_eq!(v["error"]["code"], "malformed", "{path} {what}: {v}"),
                _ => panic!("{path} {what}: {status} {v}"),
            }
        }
    }
    let healthy = wait_for("the intake to answer", || {
        tongbu_tests::http()
            .get(format!("{url}/healthz"))
            .send()
            .ok()
            .map(|r| r.status().as_u16())
    })
    .unwrap();
    assert_eq!(healthy, 200);
    assert_eq!(agent.stored().unwrap(), before, "nothing stored");
    wait_clean(&agent, 3);
    assert_same_chain(&hub, &agent);
}
