//! The JSON Schema (draft 2020-12) of the v1 record, `shared/schema/record-v1.schema.json`,
//! embedded so that the hub publishes exactly the file in the repository
//! (`GET /api/v1/schema/record`). The tests hold it to [`Record::parse`](crate::record::Record::parse):
//! every sample record and every hand-made valid record passes both; every record the parser
//! refuses, the schema refuses too, except the few checks a JSON Schema cannot express, which
//! are listed (and asserted) as such.

/// The schema's text, as published.
pub const RECORD_SCHEMA_V1: &str = include_str!("../schema/record-v1.schema.json");

#[cfg(test)]
mod tests {
    use serde_json::{Map, Value, json};

    use super::RECORD_SCHEMA_V1;
    use crate::ids::CountyCode;
    use crate::record::Record;
    use crate::sample::CountySim;

    fn validator() -> jsonschema::Validator {
        let schema: Value = serde_json::from_str(RECORD_SCHEMA_V1).unwrap();
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&schema)
            .unwrap()
    }

    fn budget() -> Value {
        json!({"kind":"budget_line","id":"BL-001","rev":1,"county":"430112","department":"101001",
               "fiscal_year":2024,"catalogue_code":"A0501","amount_fen":120000000,"stage":"approved",
               "approved_on":"2024-01-15","title":"居家养老服务"})
    }
    fn contract() -> Value {
        json!({"kind":"contract","id":"C-001","rev":1,"county":"430112","budget_line_id":"BL-001",
               "supplier_uscc":"91350100M000100Y43","supplier_name":"望城区红色管家养老服务中心",
               "method":"public_tender","catalogue_code":"A0501","amount_fen":100000000,
               "signed_on":"2024-03-01","title":"居家养老服务","service_from":"2024-03-01",
               "service_to":"2024-12-31"})
    }
    fn payment() -> Value {
        json!({"kind":"payment","id":"P-001","rev":1,"county":"430112","contract_id":"C-001",
               "amount_fen":50000000,"paid_on":"2024-04-01","voucher_no":"GK2024-0001","note":"首付"})
    }
    fn evaluation() -> Value {
        json!({"kind":"evaluation","id":"E-001","rev":1,"county":"430112","contract_id":"C-001",
               "evaluator":"湖南省第三方绩效评价中心","score":92,"grade":"excellent",
               "evaluated_on":"2024-12-01"})
    }

    fn with(base: Value, edit: impl FnOnce(&mut Map<String, Value>)) -> Value {
        let mut v = base;
        if let Value::Object(m) = &mut v {
            edit(m);
        }
        v
    }

    fn set(base: Value, field: &str, value: Value) -> Value {
        with(base, |m| {
            m.insert(field.to_owned(), value);
        })
    }

    fn drop(base: Value, field: &str) -> Value {
        with(base, |m| {
            m.remove(field);
        })
    }

    fn parses(v: &Value) -> bool {
        Record::parse(v.to_string().as_bytes()).is_ok()
    }

    #[test]
    fn the_schema_is_valid_draft_2020_12() {
        let schema: Value = serde_json::from_str(RECORD_SCHEMA_V1).unwrap();
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert!(jsonschema::meta::is_valid(&schema));
    }

    #[test]
    fn every_sample_record_validates() {
        let v = validator();
        for (county, seed) in [("430112", 1), ("431281", 7), ("431002", 42)] {
            let county = CountyCode::parse(county).unwrap();
            for sim in [
                CountySim::new(county.clone(), seed, 2024),
                CountySim::new(county.clone(), seed, 2025).with_anomalies(),
            ] {
                let mut sim = sim;
                for _ in 0..400 {
                    let text = sim.next_json();
                    let record: Value = serde_json::from_str(&text).unwrap();
                    assert!(
                        Record::parse(text.as_bytes()).is_ok(),
                        "sample refused by the parser: {text}"
                    );
                    let errors: Vec<String> =
                        v.iter_errors(&record).map(|e| e.to_string()).collect();
                    assert!(errors.is_empty(), "{text}: {errors:?}");
                }
            }
        }
    }

    #[test]
    fn schema_and_parser_agree_on_valid_records() {
        let v = validator();
        let valid = vec![
            budget(),
            contract(),
            payment(),
            evaluation(),
            drop(set(budget(), "stage", json!("compiled")), "approved_on"),
            drop(drop(contract(), "service_from"), "title"),
            set(set(payment(), "rev", json!(2)), "cancelled", json!(true)),
            json!({"kind":"contract","id":"C-001","rev":2,"county":"430112","cancelled":true}),
            json!({"kind":"budget_line","id":"B","rev":1000000,"county":"431281","cancelled":false,
                   "department":"1","fiscal_year":2199,"catalogue_code":"x","amount_fen":1000000000000000u64,
                   "stage":"reported"}),
            set(evaluation(), "score", json!(0)),
            set(payment(), "voucher_no", json!(" 凭证 1 ")),
            set(budget(), "title", json!("x".repeat(200))),
            set(payment(), "paid_on", json!("2024-02-29")),
        ];
        for r in &valid {
            assert!(parses(r), "parser refused {r}");
            let errors: Vec<String> = v.iter_errors(r).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "schema refused {r}: {errors:?}");
        }
    }

    #[test]
    fn schema_and_parser_agree_on_invalid_records() {
        let v = validator();
        let invalid = vec![
            json!([1, 2]),
            json!("budget_line"),
            drop(budget(), "kind"),
            set(budget(), "kind", json!("invoice")),
            set(budget(), "amount", json!(5)),
            set(payment(), "signed_on", json!("2024-01-01")),
            drop(payment(), "voucher_no"),
            drop(contract(), "supplier_name"),
            drop(evaluation(), "grade"),
            drop(budget(), "approved_on"),
            set(budget(), "amount_fen", json!(0)),
            set(budget(), "amount_fen", json!(-1)),
            set(budget(), "amount_fen", json!(1_000_000_000_000_001u64)),
            set(budget(), "amount_fen", json!(100.5)),
            set(budget(), "amount_fen", json!("100")),
            set(budget(), "fiscal_year", json!(1900)),
            set(budget(), "stage", json!("draft")),
            set(budget(), "approved_on", json!("2024-02-30")),
            set(payment(), "paid_on", json!("2023-02-29")),
            set(payment(), "paid_on", json!("2024/04/01")),
            set(payment(), "paid_on", json!("1989-12-31")),
            set(budget(), "county", json!("43011")),
            set(budget(), "county", json!("030112")),
            set(budget(), "id", json!("BL 001")),
            set(budget(), "id", json!("x".repeat(65))),
            set(budget(), "id", json!(7)),
            set(budget(), "rev", json!(0)),
            set(budget(), "rev", json!(1_000_001)),
            set(contract(), "supplier_uscc", json!("91350100M000100Y4")),
            set(contract(), "supplier_uscc", json!("91350100I000100Y43")),
            set(contract(), "method", json!("bribery")),
            set(contract(), "supplier_name", json!("  ")),
            set(contract(), "title", json!("x".repeat(201))),
            set(payment(), "note", json!("a\u{0007}b")),
            set(evaluation(), "score", json!(101)),
            set(evaluation(), "grade", json!("A")),
            set(payment(), "cancelled", json!("yes")),
            set(contract(), "cancelled", json!(true)),
            json!({"kind":"contract","id":"C-001","rev":1,"county":"430112","cancelled":true}),
            json!({"kind":"contract","id":"C-001","rev":2,"county":"430112","cancelled":true,"amount_fen":5}),
            json!({"kind":"contract","id":"C-001","rev":2,"county":"430112","cancelled":false}),
            json!({"kind":"payment","id":"P","rev":2,"county":"430112","cancelled":true,"signed_on":"2024-01-01"}),
        ];
        for r in &invalid {
            assert!(!parses(r), "parser accepted {r}");
            assert!(!v.is_valid(r), "schema accepted {r}");
        }
    }

    /// What the schema cannot express: the parser refuses these, the schema accepts them. The
    /// list is asserted, so a change on either side shows up here.
    #[test]
    fn the_known_gaps_are_exactly_these() {
        let v = validator();
        let gaps = vec![
            // GB 32100-2015 check character.
            set(contract(), "supplier_uscc", json!("91350100M000100Y44")),
            // service_to before service_from.
            set(contract(), "service_to", json!("2024-01-01")),
            // A whole number written with a fraction part is an integer to JSON Schema.
            set(evaluation(), "score", json!(92.0)),
        ];
        for r in &gaps {
            assert!(!parses(r), "parser accepted {r}");
            assert!(
                v.is_valid(r),
                "schema refused {r}: the gap list is out of date"
            );
        }
    }
}
