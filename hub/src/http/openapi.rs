//! The OpenAPI 3.1 document of the hub's agent and read API, `hub/openapi.json`, written by
//! hand and served at `GET /api/v1/openapi.json` (no auth). The tests below keep it true to
//! the code: its operations are exactly [`super::api_routes`], its `ErrorCode` values are
//! exactly the serde names of [`ErrorCode`], and the property names (and required fields) of
//! its schemas are those of the serde types.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

/// The document, as served.
pub const OPENAPI_JSON: &str = include_str!("../../openapi.json");

pub(crate) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use http_body_util::BodyExt as _;
    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use serde_json::{Value, json};
    use tongbu_shared::checkpoint::{Checkpoint, LogProof};
    use tongbu_shared::crypto::{Digest, Domain};
    use tongbu_shared::ids::{AgentId, Code, CountyCode};
    use tongbu_shared::policy::{Entry, PolicyBundle, Settings};
    use tongbu_shared::protocol::{
        AgentRow, AgentState, AgentsResponse, ApiError, BatchRequest, EnrollRequest,
        EnrollResponse, ErrorCode, Heartbeat, KeyRotated, Outcome, Receipt, RecordOutcome,
        RotateKeyRequest, Watermark,
    };
    use tongbu_shared::signed::Signed;
    use tongbu_shared::{Envelope, KeyPair};
    use tower::ServiceExt as _;

    use super::super::{
        LedgerView, RecordView, Verb, ViolationView, ViolationsView, api_routes, app,
    };
    use super::*;
    use crate::clock::ManualClock;
    use crate::hub::Hub;

    fn doc() -> Value {
        serde_json::from_str(OPENAPI_JSON).unwrap()
    }

    /// The document's operations as (method, path).
    fn documented_operations(doc: &Value) -> BTreeSet<(String, String)> {
        let mut ops = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                assert!(
                    ["get", "post", "put", "patch", "delete", "head", "options"]
                        .contains(&method.as_str()),
                    "{path}: unexpected key {method}"
                );
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
        ops
    }

    /// `path` with its parameters filled in with well-formed values.
    fn concrete(path: &str) -> String {
        path.replace("{agent}", "430112-0000abcd")
            .replace("{seq}", "1")
    }

    #[test]
    fn the_document_is_openapi_3_1_and_every_ref_resolves() {
        let doc = doc();
        assert_eq!(doc["openapi"], "3.1.0");
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
        fn walk(v: &Value, refs: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        refs.push(r.clone());
                    }
                    m.values().for_each(|v| walk(v, refs));
                }
                Value::Array(a) => a.iter().for_each(|v| walk(v, refs)),
                _ => {}
            }
        }
        let mut refs = Vec::new();
        walk(&doc, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{r}"));
            assert!(schemas.contains_key(name), "dangling $ref {r}");
        }
        // Every security requirement names a declared scheme; the agent headers are all there.
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for req in op["security"].as_array().unwrap() {
                    for name in req.as_object().unwrap().keys() {
                        assert!(schemes.contains_key(name), "{method} {path}: {name}");
                    }
                }
                assert!(op["responses"]["default"].is_object(), "{method} {path}");
            }
        }
        let headers: BTreeSet<&str> = schemes
            .values()
            .filter_map(|s| s["name"].as_str())
            .collect();
        for h in [
            tongbu_shared::signed::HEADER_AGENT,
            tongbu_shared::signed::HEADER_TIMESTAMP,
            tongbu_shared::signed::HEADER_NONCE,
            tongbu_shared::signed::HEADER_SIGNATURE,
        ] {
            assert!(headers.contains(h), "{h}");
        }
    }

    #[tokio::test]
    async fn the_document_lists_exactly_the_routes_of_the_router() {
        let doc = doc();
        let documented = documented_operations(&doc);
        let routed: BTreeSet<(String, String)> = api_routes()
            .iter()
            .map(|r| (r.verb.method().to_string(), r.path.to_owned()))
            .collect();
        assert_eq!(documented, routed);

        // And the router really answers each documented operation (not the JSON 404 of an
        // unknown path), and only with the documented method.
        let dir = tempfile::tempdir().unwrap();
        let hub = Hub::open(dir.path(), Arc::new(ManualClock::new(1_795_762_113_000))).unwrap();
        for route in api_routes() {
            let uri = concrete(route.path);
            let resp = app(hub.clone())
                .oneshot(
                    Request::builder()
                        .method(route.verb.method())
                        .uri(&uri)
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            let status = resp.status();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let text = String::from_utf8_lossy(&body);
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{uri}");
            assert!(!text.contains("no such endpoint"), "{uri}: {text}");

            let other = match route.verb {
                Verb::Get => Method::POST,
                Verb::Post => Method::GET,
            };
            let resp = app(hub.clone())
                .oneshot(
                    Request::builder()
                        .method(other.clone())
                        .uri(&uri)
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(
                resp.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{other} {uri}"
            );
        }
        // The control: a path the router lacks answers the JSON 404.
        let resp = app(hub.clone())
            .oneshot(
                Request::get("/api/v1/nothing-here")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn the_document_is_served_without_auth() {
        let dir = tempfile::tempdir().unwrap();
        let hub = Hub::open(dir.path(), Arc::new(ManualClock::new(1_795_762_113_000))).unwrap();
        let resp = app(hub)
            .oneshot(Request::get(OPENAPI_PATH).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()[axum::http::header::CONTENT_TYPE],
            "application/json"
        );
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let served: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(served, doc());
    }

    /// A position for each variant: adding a variant to `ErrorCode` fails to compile here
    /// until it is listed (and then `ALL` must grow to match).
    fn position(code: ErrorCode) -> usize {
        use ErrorCode as E;
        match code {
            E::MalformedJson => 0,
            E::BodyTooLarge => 1,
            E::BatchTooLarge => 2,
            E::BadRequest => 3,
            E::Unauthorized => 4,
            E::Forbidden => 5,
            E::UnknownAgent => 6,
            E::BadRequestSignature => 7,
            E::ClockSkew => 8,
            E::BadSignature => 9,
            E::WrongAgent => 10,
            E::NotConsecutive => 11,
            E::ChainGap => 12,
            E::ChainBroken => 13,
            E::Equivocation => 14,
            E::AgentQuarantined => 15,
            E::AgentRevoked => 16,
            E::TokenUnknown => 17,
            E::TokenUsed => 18,
            E::TokenExpired => 19,
            E::KeyInUse => 20,
            E::UnknownCounty => 21,
            E::NotFound => 22,
            E::Unavailable => 23,
            E::Internal => 24,
            E::ReplayedRequest => 25,
            E::RateLimited => 26,
            E::BadKeyRotation => 27,
        }
    }

    const ALL: [ErrorCode; 28] = {
        use ErrorCode as E;
        [
            E::MalformedJson,
            E::BodyTooLarge,
            E::BatchTooLarge,
            E::BadRequest,
            E::Unauthorized,
            E::Forbidden,
            E::UnknownAgent,
            E::BadRequestSignature,
            E::ClockSkew,
            E::BadSignature,
            E::WrongAgent,
            E::NotConsecutive,
            E::ChainGap,
            E::ChainBroken,
            E::Equivocation,
            E::AgentQuarantined,
            E::AgentRevoked,
            E::TokenUnknown,
            E::TokenUsed,
            E::TokenExpired,
            E::KeyInUse,
            E::UnknownCounty,
            E::NotFound,
            E::Unavailable,
            E::Internal,
            E::ReplayedRequest,
            E::RateLimited,
            E::BadKeyRotation,
        ]
    };

    #[test]
    fn the_error_codes_are_exactly_the_serde_names() {
        for (i, code) in ALL.into_iter().enumerate() {
            assert_eq!(position(code), i, "{code:?} is out of place in ALL");
            assert_eq!(serde_json::to_value(code).unwrap(), json!(code.as_str()));
        }
        let expected: Vec<&str> = ALL.into_iter().map(ErrorCode::as_str).collect();
        let doc = doc();
        let documented: Vec<&str> = doc["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(documented, expected);
    }

    fn object_keys(v: &Value) -> BTreeSet<String> {
        v.as_object()
            .unwrap_or_else(|| panic!("not an object: {v}"))
            .keys()
            .cloned()
            .collect()
    }

    /// The schema's properties are exactly the keys of `example` serialized (an example
    /// with every optional field set), and its required fields are among them.
    fn check_keys(name: &str, example: &impl Serialize) -> (Value, Value) {
        let doc = doc();
        let schema = doc["components"]["schemas"][name].clone();
        assert!(schema.is_object(), "no schema {name}");
        let value = serde_json::to_value(example).unwrap();
        let keys = object_keys(&value);
        assert_eq!(
            object_keys(&schema["properties"]),
            keys,
            "{name}: properties"
        );
        let required: BTreeSet<String> = schema["required"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: no required list"))
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        assert!(required.is_subset(&keys), "{name}: required ⊄ keys");
        (schema, value)
    }

    /// [`check_keys`], and required means required: the type does not deserialize without
    /// a required field and does without any other one.
    fn check<T: Serialize + DeserializeOwned>(name: &str, example: &T) {
        let (schema, value) = check_keys(name, example);
        let required = schema["required"].as_array().unwrap();
        for key in object_keys(&value) {
            let mut without = value.clone();
            without.as_object_mut().unwrap().remove(&key);
            let parsed = serde_json::from_value::<T>(without).is_ok();
            let is_required = required.contains(&json!(key));
            assert_eq!(
                parsed, !is_required,
                "{name}.{key}: documented required = {is_required}"
            );
        }
    }

    fn key(seed: u8) -> KeyPair {
        KeyPair::from_seed(&[seed; 32]).unwrap()
    }

    fn agent() -> AgentId {
        AgentId::parse("430112-0000abcd").unwrap()
    }

    fn county() -> CountyCode {
        CountyCode::parse("430112").unwrap()
    }

    fn outcome() -> RecordOutcome {
        RecordOutcome {
            seq: 3,
            outcome: Outcome::Held,
            codes: vec!["R1".into()],
            duplicate: false,
            detail: Some("waiting".into()),
            policy_version: Some(2),
        }
    }

    #[test]
    fn schema_properties_match_the_serde_types() {
        let sig = key(1).sign(Domain::Enroll, b"x");
        let digest = Digest::of(&[b"x"]);
        check(
            "EnrollRequest",
            &EnrollRequest {
                token: "t".into(),
                public_key: key(1).public_key(),
                proof: sig,
                agent_version: "1.0".into(),
                hostname: Some("h".into()),
            },
        );
        check(
            "EnrollResponse",
            &EnrollResponse {
                agent_id: agent(),
                county: county(),
                county_name: "望城区".into(),
                hub_public_key: key(2).public_key(),
                protocol: 1,
            },
        );
        let heartbeat = Heartbeat {
            head_seq: 4,
            queue_depth: 1,
            agent_version: "1.0".into(),
            last_error: Some("e".into()),
            outcome_cursor: 9,
            log_size: 12,
        };
        check("Heartbeat", &heartbeat);
        let envelope = Envelope {
            agent: agent(),
            seq: 1,
            prev: digest,
            body: br#"{"kind":"x"}"#.to_vec(),
            sig,
        };
        check("Envelope", &envelope);
        check(
            "BatchRequest",
            &BatchRequest {
                heartbeat,
                envelopes: vec![envelope],
            },
        );
        check("RecordOutcome", &outcome());
        let checkpoint = Checkpoint {
            tree_size: 12,
            root: digest,
            hub_time_ms: 5,
        };
        check("Checkpoint", &checkpoint);
        let log_proof = LogProof {
            checkpoint: Signed::sign(&key(2), &checkpoint).unwrap(),
            head_index: Some(3),
            inclusion: vec![digest, digest],
            consistency_from: 4,
            consistency: vec![digest],
        };
        check("LogProof", &log_proof);
        let receipt = Receipt {
            agent_id: agent(),
            acked_seq: 3,
            head_hash: digest,
            outcomes: vec![outcome()],
            hub_time_ms: 5,
            updates: vec![outcome()],
            outcome_cursor: 7,
            policy_version: 2,
            log: Some(log_proof.clone()),
        };
        check("Receipt", &receipt);
        let watermark = Watermark {
            agent_id: agent(),
            acked_seq: 3,
            head_hash: digest,
            state: AgentState::Active,
            hub_time_ms: 5,
        };
        check("Watermark", &watermark);
        let row = AgentRow {
            agent_id: agent(),
            county: county(),
            acked_seq: 3,
            head_seq: 4,
            lag: 1,
            last_seen: Some("2026-01-01T00:00:00Z".into()),
            state: AgentState::Quarantined,
            queue_depth: 2,
            agent_version: Some("1.0".into()),
            last_error: Some("e".into()),
        };
        check("AgentRow", &row);
        check("AgentsResponse", &AgentsResponse { agents: vec![row] });
        check(
            "RotateKeyRequest",
            &RotateKeyRequest {
                new_public_key: key(3).public_key(),
                last_old_seq: 3,
                proof: sig,
            },
        );
        let rotated = KeyRotated {
            agent_id: agent(),
            public_key: key(3).public_key(),
            last_old_seq: 3,
            hub_time_ms: 5,
        };
        check("KeyRotated", &rotated);
        let entry = Entry {
            code: Code::parse("A01").unwrap(),
            name: "养老服务".into(),
        };
        check("Entry", &entry);
        check("Settings", &Settings::default());
        let bundle = PolicyBundle {
            version: 2,
            issued_at_ms: 5,
            catalogue: vec![entry.clone()],
            negative_list: vec![entry],
            settings: Settings::default(),
        };
        check("PolicyBundle", &bundle);
        let mut error = ApiError::new(ErrorCode::ChainGap, "gap");
        error.error.acked_seq = Some(3);
        error.error.seq = Some(5);
        error.error.skew_seconds = Some(-2);
        check("ApiErrorDetail", &error.error);
        check("ApiError", &error);

        // The signed wrappers: `{payload, sig}` around each signed document.
        let hub = key(9);
        check_keys("SignedReceipt", &Signed::sign(&hub, &receipt).unwrap());
        check_keys("SignedWatermark", &Signed::sign(&hub, &watermark).unwrap());
        check_keys("SignedKeyRotated", &Signed::sign(&hub, &rotated).unwrap());
        check_keys("SignedPolicyBundle", &Signed::sign(&hub, &bundle).unwrap());
    }

    #[test]
    fn read_api_schemas_match_the_hub_views() {
        let digest = Digest::of(&[b"x"]);
        check_keys(
            "RecordView",
            &RecordView {
                agent_id: agent(),
                seq: 1,
                prev: digest,
                hash: digest,
                sig: key(1).sign(Domain::Enroll, b"x"),
                body: serde_json::value::to_raw_value(&json!({"kind": "x"})).unwrap(),
                received_at: "2026-01-01T00:00:00Z".into(),
                outcome: Outcome::Accepted,
                codes: vec![],
                detail: None,
                policy_version: None,
            },
        );
        check_keys(
            "LedgerView",
            &LedgerView {
                county: county(),
                year: 2026,
                budget_approved_fen: 1,
                contracted_fen: 1,
                paid_fen: 1,
                accepted: 1,
                held: 0,
                rejected: 0,
            },
        );
        let violation = ViolationView {
            agent_id: agent(),
            seq: 1,
            kind: "contract".into(),
            id: "C1".into(),
            rule: "R1".into(),
            detail: "d".into(),
            county: county(),
            fiscal_year: None,
            outcome: Outcome::Rejected,
            at: "2026-01-01T00:00:00Z".into(),
        };
        check_keys("ViolationView", &violation);
        check_keys(
            "ViolationsView",
            &ViolationsView {
                violations: vec![violation],
            },
        );
        check_keys("Health", &json!({"status": "ok"}));
    }
}
