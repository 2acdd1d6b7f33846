//! CSV exports of the ledger and the violations: UTF-8 with a byte-order mark (so Excel reads
//! Chinese correctly), amounts in fen and in yuan, served as attachments. A cell that a
//! spreadsheet would take for a formula is prefixed with `'`.
//!
//! The ledger export is small (one row per county, year and catalogue code) and is built
//! whole. The violations export holds every violation matching its filter (a province has
//! hundreds of thousands): it is streamed from one read snapshot in chunks of about
//! [`CHUNK`] bytes, so its memory stays bounded and its first bytes leave at once; a store
//! error after the headers aborts the response (the client sees a broken transfer, never a
//! short file that looks complete).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Uri, header};
use axum::response::IntoResponse;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};
use tokio::sync::mpsc;

use super::pages::{violation_filter, year_param};
use super::render::plain_yuan;
use super::{Console, Fail, PageResult};
use crate::store::{ConsoleViolation, StoreError};

/// About this many bytes of the violations export are gathered before they are sent...
const CHUNK: usize = 64 * 1024;
/// ...and at most this many chunks wait for a slow client before the reader waits too.
const CHUNKS_IN_FLIGHT: usize = 4;

/// `s` as one CSV cell, appended to `out` (see [`cell`]).
fn push_cell(out: &mut String, s: &str) {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        if formula {
            out.push('\'');
        }
        for ch in s.chars() {
            if ch == '"' {
                out.push('"');
            }
            out.push(ch);
        }
        out.push('"');
    } else {
        if formula {
            out.push('\'');
        }
        out.push_str(s);
    }
}

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

/// The violations export's columns.
const VIOLATION_COLUMNS: [&str; 13] = [
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
];

/// One violation as a CSV line (the same cells as the violations page shows). `found_at`
/// keeps the last time formatted: violations found in the same second (most of them, in a
/// busy hub) share its text.
fn push_violation(out: &mut String, v: &ConsoleViolation, found_at: &mut (i64, String)) {
    let row = &v.row.violation;
    let review = v.review.as_ref();
    let _ = write!(out, "{},", v.id);
    push_cell(out, row.county.as_str());
    out.push(',');
    if let Some(y) = row.fiscal_year {
        let _ = write!(out, "{y}");
    }
    for text in [&row.kind, &row.entity_id, &row.rule, &row.detail] {
        out.push(',');
        push_cell(out, text);
    }
    out.push(',');
    out.push_str(v.row.outcome.as_str());
    out.push(',');
    push_cell(out, row.agent.as_str());
    let _ = write!(out, ",{},", row.seq);
    let second = row.at_ms.div_euclid(1000);
    if found_at.1.is_empty() || found_at.0 != second {
        *found_at = (second, crate::clock::rfc3339(row.at_ms));
    }
    push_cell(out, &found_at.1);
    out.push(',');
    out.push_str(review.map_or("open", |r| r.status.as_str()));
    out.push(',');
    push_cell(out, review.map_or("", |r| r.note.as_str()));
    out.push_str("\r\n");
}

pub async fn violations_csv(
    State(c): State<Console>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> PageResult {
    c.session(&headers, &uri).await?;
    let filter = violation_filter(&q, u32::MAX)?;
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(CHUNKS_IN_FLIGHT);
    let db = c.hub.db().clone();
    tokio::spawn(async move {
        let failed = tx.clone();
        let read = db
            .read(move |r| {
                let mut out = String::with_capacity(CHUNK + 4096);
                out.push('\u{feff}');
                out.push_str(&VIOLATION_COLUMNS.join(","));
                out.push_str("\r\n");
                let mut client_gone = false;
                let mut found_at = (0, String::new());
                r.each_console_violation(&filter, &mut |v| {
                    push_violation(&mut out, &v, &mut found_at);
                    if out.len() >= CHUNK {
                        let chunk =
                            std::mem::replace(&mut out, String::with_capacity(CHUNK + 4096));
                        // Runs on the blocking pool (Db::read), where blocking is allowed.
                        client_gone = tx.blocking_send(Ok(Bytes::from(chunk))).is_err();
                    }
                    !client_gone
                })?;
                if !client_gone {
                    let _ = tx.blocking_send(Ok(Bytes::from(out)));
                }
                Ok::<_, StoreError>(())
            })
            .await;
        if let Err(e) = read {
            tracing::error!(error = %e, "console: the violations export failed");
            let _ = failed.send(Err(std::io::Error::other(e.to_string()))).await;
        }
    });
    // The first chunk (at least the header row) or the failure, before the status is sent.
    let first = match rx.recv().await {
        Some(Ok(first)) => first,
        Some(Err(_)) | None => return Err(Fail::Internal),
    };
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"violations.csv\"".to_owned(),
            ),
        ],
        Body::new(Chunks {
            chunk: Some(frame_of(first)),
            rx,
        }),
    )
        .into_response())
}

/// A body of one chunk: the hub names `http_body::Frame` only through http-body-util.
type Chunk = UnsyncBoxBody<Bytes, std::io::Error>;

/// What [`HttpBody::poll_frame`] of a body of [`Bytes`] and [`std::io::Error`] yields.
type Polled = <http_body_util::combinators::Frame<'static, Chunk> as std::future::Future>::Output;

fn frame_of(bytes: Bytes) -> Chunk {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A response body of the chunks sent on `rx`; an error ends it as a failed transfer.
struct Chunks {
    chunk: Option<Chunk>,
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

impl HttpBody for Chunks {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Polled> {
        loop {
            if let Some(chunk) = self.chunk.as_mut() {
                match Pin::new(chunk).poll_frame(cx) {
                    Poll::Ready(None) => self.chunk = None,
                    other => return other,
                }
            }
            match ready!(self.rx.poll_recv(cx)) {
                None => return Poll::Ready(None),
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                Some(Ok(bytes)) => self.chunk = Some(frame_of(bytes)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{cell, push_cell};

    #[test]
    fn push_cell_writes_what_cell_returns() {
        for s in [
            "",
            "plain",
            "a,b",
            "say \"hi\"",
            "=1+2",
            "-5",
            "@x,y",
            "\tx",
            "line\nbreak",
            "\"=q\"",
            "望城区",
        ] {
            let mut out = String::new();
            push_cell(&mut out, s);
            assert_eq!(out, cell(s), "{s:?}");
        }
    }
}
