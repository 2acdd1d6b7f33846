//! The formats counties already have: a GBK CSV file and an Excel workbook imported with the
//! real `tongbu-agent import`, synced to a real hub and read back from the ledger API; a file
//! with bad rows refused whole, every row named; the hub's OCDS export (CLI and API) validated
//! against the vendored OCDS 1.1 schemas; and the export imported into a fresh agent of a fresh
//! hub, which then holds the same ledger.

use std::path::Path;

use serde_json::Value;
use tongbu_tests::{Agent, Hub, records};

const COUNTY: &str = "430112";

/// Budget line and contract rows, Chinese headers, yuan with separators, three date styles.
const CSV: &str = "类型,编号,指标编号,部门,年度,目录编码,金额(元),阶段,批复日期,统一社会信用代码,供应商,采购方式,签订日期,项目名称,经办人\n\
预算指标,BL-1,,101001,2024,A0501,\"1,200,000.00\",已批复,2024年1月15日,,,,,居家养老服务,张三\n\
\n\
合同,C-1,BL-1,,,A0501,1000000.5,,,91350100M000100Y43,望城区红色管家养老服务中心,公开招标,2024/3/1,居家养老服务,李四\n";

fn gbk(text: &str) -> Vec<u8> {
    let (bytes, _, unmappable) = encoding_rs::GBK.encode(text);
    assert!(!unmappable);
    bytes.into_owned()
}

/// Payments in a workbook: a yuan number cell and a date-formatted cell, on sheet 支付.
fn payments_xlsx() -> Vec<u8> {
    use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};
    let mut wb = Workbook::new();
    let ws = wb.add_worksheet();
    ws.set_name("支付").unwrap();
    for (col, h) in ["支付编号", "合同编号", "支付金额(元)", "支付日期", "凭证号"]
        .iter()
        .enumerate()
    {
        ws.write(0, col as u16, *h).unwrap();
    }
    let date = Format::new().set_num_format("yyyy-mm-dd");
    ws.write(1, 0, "P-1").unwrap();
    ws.write(1, 1, "C-1").unwrap();
    ws.write(1, 2, 500_000.25).unwrap();
    ws.write_datetime_with_format(1, 3, ExcelDateTime::from_ymd(2024, 4, 1).unwrap(), &date)
        .unwrap();
    ws.write(1, 4, "GK2024-0001").unwrap();
    wb.save_to_buffer().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_owned()
}

fn ledger(hub: &Hub, year: i32) -> Value {
    hub.ledger(COUNTY, year).unwrap()
}

#[test]
fn gbk_csv_and_xlsx_import_sync_to_the_ledger() {
    let hub = Hub::start().unwrap();
    hub.add_county(COUNTY, "望城区");
    let agent = Agent::enrolled(&hub, COUNTY).unwrap();
    let dir = tempfile::tempdir().unwrap();

    let csv = write(dir.path(), "指标与合同.csv", &gbk(CSV));
    let out = agent
        .cli(&["import", "--format", "csv", &csv])
        .expect_ok("import csv");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        vec![
            "seq=1 kind=budget_line id=BL-1 rev=1",
            "seq=2 kind=contract id=C-1 rev=1"
        ],
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("经办人"), "{}", out.stderr);

    let xlsx = write(dir.path(), "支付.xlsx", &payments_xlsx());
    let out = agent
        .cli(&[
            "import", "--format", "xlsx", "--sheet", "支付", "--kind", "payment", &xlsx,
        ])
        .expect_ok("import xlsx");
    assert_eq!(out.stdout.trim(), "seq=3 kind=payment id=P-1 rev=1");

    // A file with bad rows: every row named, nothing stored, exit code 2.
    let bad = "支付编号,合同编号,金额(元),支付日期,凭证号\n\
               P-2,C-1,\"12,3.4\",2024-04-02,GK-2\n\
               P-3,C-1,1.005,2024-02-30,GK-3\n\
               P-4,C-1,5,2024-04-02,GK-4\n";
    let bad = write(dir.path(), "bad.csv", &gbk(bad));
    let out = agent.cli(&["import", "--format", "csv", "--kind", "payment", &bad]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    for expected in [
        "row 2, column 金额(元): '12,3.4' is not an amount in yuan",
        "row 3, column 金额(元): '1.005' has more than 2 decimal(s)",
        "row 3, column 支付日期: '2024-02-30' is not a date",
    ] {
        assert!(out.stderr.contains(expected), "{expected}\n{}", out.stderr);
    }
    assert_eq!(agent.status().unwrap()["head_seq"], 3);

    // --strict refuses a file whose records break a rule, naming the row.
    let over = "支付编号,合同编号,金额(元),支付日期,凭证号\nP-9,C-1,900000000,2024-05-01,GK-9\n";
    let over = write(dir.path(), "over.csv", over.as_bytes());
    let out = agent.cli(&[
        "import", "--format", "csv", "--kind", "payment", "--strict", &over,
    ]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("row 2: CONTRACT_EXCEEDED"),
        "{}",
        out.stderr
    );
    assert_eq!(agent.status().unwrap()["head_seq"], 3);

    agent.sync_once();
    let l = ledger(&hub, 2024);
    assert_eq!(l["budget_approved_fen"], 120_000_000);
    assert_eq!(l["contracted_fen"], 100_000_050);
    assert_eq!(l["paid_fen"], 50_000_025);
    assert_eq!(l["accepted"], 3);
    assert_eq!(l["rejected"], 0);
}

/// A retriever that serves the vendored OCDS 1.1 release schema for the package schema's
/// `$ref`, so validation needs no network.
struct Vendored(Value);

impl jsonschema::Retrieve for Vendored {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        if uri.as_str().ends_with("/release-schema.json") {
            Ok(self.0.clone())
        } else {
            Err(format!("no vendored schema for {}", uri.as_str()).into())
        }
    }
}

fn ocds_validator() -> jsonschema::Validator {
    let data = tongbu_tests::workspace_dir().join("hub/tests/data/ocds-1.1");
    let read = |name: &str| -> Value {
        serde_json::from_slice(&std::fs::read(data.join(name)).unwrap()).unwrap()
    };
    let package = read("release-package-schema.json");
    let mut release = read("release-schema.json");
    // The package schema (1.1.5) refers to the 1.1.5 release schema by URL; the vendored
    // release schema is 1.1.4 (same 1.1 content for what is validated here), served there.
    release["id"] = package["properties"]["releases"]["items"]["$ref"].clone();
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .should_validate_formats(true)
        .with_retriever(Vendored(release))
        .build(&package)
        .unwrap()
}

fn assert_valid_ocds(package: &Value) {
    let v = ocds_validator();
    let errors: Vec<String> = v
        .iter_errors(package)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn the_validator_catches_an_invalid_package() {
    // The control: the schemas really are applied.
    let v = ocds_validator();
    let bad = serde_json::json!({
        "uri": "urn:x", "version": "1.1", "publishedDate": "2024-01-01T00:00:00Z",
        "publisher": {"name": "x"},
        "releases": [{"ocid": "ocds-x-1", "id": "1", "date": "2024-01-01T00:00:00Z",
                      "tag": ["planning"], "initiationType": "tender",
                      "contracts": [{"id": "C-1"}]}]
    });
    assert!(
        !v.is_valid(&bad),
        "a contract without awardID must be invalid"
    );
    let bad_currency = serde_json::json!({
        "uri": "urn:x", "version": "1.1", "publishedDate": "2024-01-01T00:00:00Z",
        "publisher": {"name": "x"},
        "releases": [{"ocid": "ocds-x-1", "id": "1", "date": "2024-01-01T00:00:00Z",
                      "tag": ["planning"], "initiationType": "tender",
                      "planning": {"budget": {"amount": {"amount": 1, "currency": "RMB"}}}}]
    });
    assert!(!v.is_valid(&bad_currency));
}

#[test]
fn ocds_export_validates_and_round_trips_into_a_fresh_agent() {
    let hub = Hub::start().unwrap();
    hub.add_county(COUNTY, "望城区");
    let agent = Agent::enrolled(&hub, COUNTY).unwrap();
    agent.submit(&records(COUNTY, 11, 120)).expect_ok("submit");
    agent.sync_once();
    let before = ledger(&hub, 2024);
    for figure in [
        "budget_approved_fen",
        "contracted_fen",
        "paid_fen",
        "accepted",
    ] {
        assert!(before[figure].as_i64().unwrap() > 0, "{before}");
    }

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("430112-2024.json");
    hub.cli(&[
        "export",
        "ocds",
        "--county",
        COUNTY,
        "--year",
        "2024",
        "--out",
        file.to_str().unwrap(),
    ])
    .expect_ok("export ocds");
    let text = std::fs::read_to_string(&file).unwrap();
    let package: Value = serde_json::from_str(&text).unwrap();
    assert_valid_ocds(&package);
    let releases = package["releases"].as_array().unwrap();
    assert!(!releases.is_empty());
    assert!(releases.iter().all(|r| {
        r["ocid"]
            .as_str()
            .unwrap()
            .starts_with("ocds-tongbu-430112-")
    }));
    // Contracts, payments and evaluations travel too, not only budget lines.
    let contracts: Vec<&Value> = releases
        .iter()
        .flat_map(|r| r["contracts"].as_array().into_iter().flatten())
        .collect();
    assert!(
        contracts
            .iter()
            .any(|c| c["implementation"]["transactions"].is_array())
    );
    assert!(
        contracts
            .iter()
            .any(|c| c["tongbu"]["evaluations"].is_array())
    );

    // The API serves the same releases (publishedDate differs: it is the time of the call).
    let (status, served) = hub
        .get(&format!(
            "/api/v1/ocds?county={COUNTY}&year=2024&ocid_prefix=ocds-abc123-"
        ))
        .unwrap();
    assert_eq!(status, 200, "{served}");
    assert_valid_ocds(&served);
    assert_eq!(served["releases"].as_array().unwrap().len(), releases.len());
    assert!(
        served["releases"][0]["ocid"]
            .as_str()
            .unwrap()
            .starts_with("ocds-abc123-430112-")
    );
    let (status, refused) = hub.get("/api/v1/ocds?county=430112").unwrap();
    assert_eq!(status, 400, "{refused}");
    // A year without records has nothing to publish (a package holds at least one release).
    let (status, empty) = hub.get("/api/v1/ocds?county=430112&year=2030").unwrap();
    assert_eq!(status, 404, "{empty}");
    assert_eq!(empty["error"]["code"], "not_found", "{empty}");

    // Into a fresh agent of a fresh hub: the same ledger.
    let hub2 = Hub::start().unwrap();
    hub2.add_county(COUNTY, "望城区");
    let agent2 = Agent::enrolled(&hub2, COUNTY).unwrap();
    agent2
        .cli(&["import", "--format", "ocds", file.to_str().unwrap()])
        .expect_ok("import ocds");
    agent2.sync_once();
    assert_eq!(ledger(&hub2, 2024), before);
}

#[test]
fn the_record_schema_is_public() {
    let hub = Hub::start().unwrap();
    let resp = tongbu_tests::http()
        .get(format!("{}/api/v1/schema/record", hub.url()))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let schema: Value = resp.json().unwrap();
    assert_eq!(schema["$id"], "urn:tongbu:schema:record:v1");
    // The OCDS export is a read call like the ledger: it needs an API key.
    let resp = tongbu_tests::http()
        .get(format!(
            "{}/api/v1/ocds?county={COUNTY}&year=2024",
            hub.url()
        ))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(
        schema,
        serde_json::from_str::<Value>(tongbu_shared::schema::RECORD_SCHEMA_V1).unwrap()
    );
}

/// The exact fen of an OCDS amount (a JSON number of yuan).
fn fen(amount: &Value) -> i64 {
    let text = amount["amount"].to_string();
    tongbu_shared::yuan::parse(&text, tongbu_shared::yuan::Unit::Yuan)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[test]
fn the_export_of_a_messy_county_sums_to_its_ledger() {
    // Rejected, held, amended and cancelled records: the package holds what stands, so its
    // amounts add up to the ledger's totals.
    let hub = Hub::start().unwrap();
    hub.add_county(COUNTY, "望城区");
    let agent = Agent::enrolled(&hub, COUNTY).unwrap();
    agent
        .submit(&tongbu_tests::records_with_anomalies(COUNTY, 5, 300))
        .expect_ok("submit");
    agent.sync_once();
    let l = ledger(&hub, 2024);
    assert!(l["rejected"].as_u64().unwrap() > 0, "{l}");

    let out = hub
        .cli(&["export", "ocds", "--county", COUNTY, "--year", "2024"])
        .expect_ok("export ocds to stdout");
    let package: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_valid_ocds(&package);
    let (mut budget, mut contracted, mut paid) = (0, 0, 0);
    for r in package["releases"].as_array().unwrap() {
        let b = &r["planning"]["budget"];
        if b["tongbu"]["stage"] == "approved" {
            budget += fen(&b["amount"]);
        }
        for c in r["contracts"].as_array().into_iter().flatten() {
            contracted += fen(&c["value"]);
            for t in c["implementation"]["transactions"]
                .as_array()
                .into_iter()
                .flatten()
            {
                paid += fen(&t["value"]);
            }
        }
    }
    assert_eq!(
        (budget, contracted, paid),
        (
            l["budget_approved_fen"].as_i64().unwrap(),
            l["contracted_fen"].as_i64().unwrap(),
            l["paid_fen"].as_i64().unwrap()
        ),
        "{l}"
    );
    let unknown = hub.cli(&["export", "ocds", "--county", "431281", "--year", "2024"]);
    assert!(
        !unknown.ok && unknown.stderr.contains("no county 431281"),
        "{}",
        unknown.stderr
    );
}
