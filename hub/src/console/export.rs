//! CSV exports of the ledger and the violations: UTF-8 with a byte-order mark (so Excel reads
//! Chinese correctly), amounts in fen and in yuan, served as attachments. A cell that a
//! spreadsheet would take for a formula is prefixed with `'`.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, Uri, header};
use axum::response::IntoResponse;

use super::pages::{violation_filter, violation_view, year_param};
use super::render::plain_yuan;
use super::{Console, PageResult};
use crate::store::StoreError;

/// Most violations one export holds.
const MAX_EXPORT_VIOLATIONS: u32 = 100_000;

fn cell(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn csv(name: &str, header_row: &[&str], rows: Vec<Vec<String>>) -> axum::response::Response {
    let mut out = String::from("\u{feff}");
    out.push_str(&header_row.join(","));
    out.push_str("\r\n");
    for row in rows {
        let cells: Vec<String> = row.iter().map(|c| cell(c)).collect();
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        out,
    )
        .into_response()
}

pub async fn ledger_csv(
    State(c): State<Console>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> PageResult {
    c.session(&headers, &uri).await?;
    let year = year_param(&q)?;
    let (rows, counties) = c
        .hub
        .db()
        .read(move |r| Ok::<_, StoreError>((r.province_ledger(year)?, r.counties()?)))
        .await?;
    let names: HashMap<String, String> = counties
        .into_iter()
        .map(|c| (c.code.to_string(), c.name))
        .collect();
    let rows = rows
        .into_iter()
        .map(|(county, slot, t)| {
            let county = county.to_string();
            vec![
                county.clone(),
                names.get(&county).cloned().unwrap_or_default(),
                slot.year.to_string(),
                slot.catalogue,
                t.budget_approved.to_string(),
                plain_yuan(t.budget_approved),
                t.contracted.to_string(),
                plain_yuan(t.contracted),
                t.paid.to_string(),
                plain_yuan(t.paid),
                t.accepted.to_string(),
                t.held.to_string(),
                t.rejected.to_string(),
            ]
        })
        .collect();
    Ok(csv(
        "ledger.csv",
        &[
            "county",
            "county_name",
            "year",
            "catalogue_code",
            "budget_approved_fen",
            "budget_approved_yuan",
            "contracted_fen",
            "contracted_yuan",
            "paid_fen",
            "paid_yuan",
            "accepted",
            "held",
            "rejected",
        ],
        rows,
    ))
}

pub async fn violations_csv(
    State(c): State<Console>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> PageResult {
    c.session(&headers, &uri).await?;
    let filter = violation_filter(&q, MAX_EXPORT_VIOLATIONS)?;
    let list = c
        .hub
        .db()
        .read(move |r| r.console_violations(&filter))
        .await?;
    let rows = list
        .into_iter()
        .map(violation_view)
        .map(|v| {
            vec![
                v.id.to_string(),
                v.county,
                v.year.map(|y| y.to_string()).unwrap_or_default(),
                v.kind,
                v.entity_id,
                v.rule,
                v.detail,
                v.outcome.to_owned(),
                v.agent,
                v.seq.to_string(),
                crate::clock::rfc3339(v.at),
                v.status.to_owned(),
                v.note,
            ]
        })
        .collect();
    Ok(csv(
        "violations.csv",
        &[
            "id",
            "county",
            "year",
            "kind",
            "entity_id",
            "rule",
            "detail",
            "outcome",
            "agent_id",
            "seq",
            "found_at",
            "review_status",
            "review_note",
        ],
        rows,
    ))
}
