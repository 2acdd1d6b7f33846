//! Rendering: the embedded templates (`hub/templates/`, auto-escaped), the filters that
//! format money (`yuan`: ¥1,234,567.89; `wan`: 万元 with two decimals, integer arithmetic
//! only) and times (`ts`: RFC 3339), and the page frame every page shares.

use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use minijinja::{Environment, Value, context};
use tongbu_shared::Fen;

use super::i18n::Lang;
use super::session::{Session, lang_cookie};
use super::{Console, Fail, PageResult};
use crate::clock::rfc3339;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/base.html")),
    ("login.html", include_str!("../../templates/login.html")),
    (
        "overview.html",
        include_str!("../../templates/overview.html"),
    ),
    (
        "counties.html",
        include_str!("../../templates/counties.html"),
    ),
    ("county.html", include_str!("../../templates/county.html")),
    ("trace.html", include_str!("../../templates/trace.html")),
    (
        "violations.html",
        include_str!("../../templates/violations.html"),
    ),
    ("agents.html", include_str!("../../templates/agents.html")),
    ("token.html", include_str!("../../templates/token.html")),
    ("policy.html", include_str!("../../templates/policy.html")),
    ("audit.html", include_str!("../../templates/audit.html")),
    (
        "agents_table.html",
        include_str!("../../templates/agents_table.html"),
    ),
];

pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    for (name, source) in TEMPLATES {
        if let Err(e) = env.add_template(name, source) {
            // The templates are compiled in; a broken one is caught by the tests.
            tracing::error!(template = name, error = %e, "console template does not parse");
        }
    }
    env.add_filter("yuan", |fen: i64| yuan(fen));
    env.add_filter("wan", |fen: i64| wan(fen));
    env.add_filter("ts", |ms: Option<i64>| {
        ms.map_or_else(|| "—".to_owned(), beijing_time)
    });
    env
}

/// A time as the province reads it: ISO 8601 in China Standard Time (UTC+8, no daylight
/// saving), e.g. `2026-11-27T16:11:21+08:00`. Stored times stay UTC milliseconds.
pub fn beijing_time(ms: i64) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]+08:00");
    let east8 = time::UtcOffset::from_hms(8, 0, 0).unwrap_or(time::UtcOffset::UTC);
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .map(|t| t.to_offset(east8))
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_else(|| rfc3339(ms))
}

/// `¥1,234,567.89`.
pub fn yuan(fen: i64) -> String {
    match Fen::from_total(fen) {
        Some(f) => format!("¥{f}"),
        None => format!(
            "-¥{}",
            Fen::from_total(fen.saturating_neg()).unwrap_or(Fen::ZERO)
        ),
    }
}

/// An amount in 万元 with two decimals (rounded half up), e.g. `12,345.68`.
pub fn wan(fen: i64) -> String {
    // 1 万元 = 1,000,000 fen; keep two decimals: hundredths of 万元 = 10,000 fen.
    let hundredths = (fen.saturating_add(5_000)) / 10_000;
    Fen::from_total(hundredths).map_or_else(|| "0.00".to_owned(), |f| f.to_string())
}

/// Plain yuan for CSV: `1234567.89`.
pub fn plain_yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let a = fen.unsigned_abs();
    format!("{sign}{}.{:02}", a / 100, a % 100)
}

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

impl Console {
    /// Renders a page inside the shared frame (nav, user, logout form).
    pub fn render(
        &self,
        name: &str,
        lang: Lang,
        session: Option<&Session>,
        ctx: Value,
    ) -> PageResult {
        let t = lang.table();
        let frame = context! {
            t => Value::from_serialize(&t),
            lang => lang.code(),
            other_lang => if lang.english { "zh" } else { "en" },
            signed_in => session.is_some(),
            username => session.map(|s| s.username.clone()),
            role => session.map(|s| s.role.as_str()),
            is_admin => session.is_some_and(Session::is_admin),
            csrf => session.map(|s| s.csrf.clone()),
        };
        let html = self
            .templates
            .get_template(name)
            .and_then(|tpl| tpl.render(context! { ..ctx, ..frame }))
            .map_err(|e| {
                tracing::error!(template = name, error = %e, "console template failed");
                Fail::Internal
            })?;
        let mut resp = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
        if lang.switched {
            if let Ok(v) = HeaderValue::from_str(&lang_cookie(lang)) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
        }
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        let env = environment();
        for (name, _) in TEMPLATES {
            env.get_template(name).unwrap();
        }
    }

    #[test]
    fn unknown_labels_fall_back_to_the_raw_value() {
        // A malformed record's kind can be anything the county sent; it must still render.
        let env = environment();
        let t: std::collections::BTreeMap<&str, &str> =
            std::collections::BTreeMap::from([("kind_payment", "国库支付")]);
        let tpl = r#"{{ t["kind_" ~ k]|default(k) }}"#;
        let out = env
            .render_str(tpl, context! { t => t, k => "invoice" })
            .unwrap();
        assert_eq!(out, "invoice");
        let out = env
            .render_str(tpl, context! { t => t, k => "payment" })
            .unwrap();
        assert_eq!(out, "国库支付");
    }

    #[test]
    fn times_show_in_china_standard_time() {
        assert_eq!(beijing_time(1_795_762_113_999), "2026-11-27T14:48:33+08:00");
        assert_eq!(beijing_time(0), "1970-01-01T08:00:00+08:00");
    }

    #[test]
    fn money_formats() {
        assert_eq!(yuan(123_456_789), "¥1,234,567.89");
        assert_eq!(wan(123_456_789), "123.46");
        assert_eq!(wan(1_000_000_000_000), "1,000,000.00");
        assert_eq!(plain_yuan(123_456_789), "1234567.89");
        assert_eq!(plain_yuan(5), "0.05");
    }
}
