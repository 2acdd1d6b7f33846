//! The policy that drives the rules: the provincial guidance catalogue (指导性目录) of what may
//! be bought, the negative list (负面清单) of what may never be bought as a service, and the
//! rule settings. The hub keeps every version forever and signs each as a [`PolicyBundle`];
//! agents verify the signature, refuse a version older than the one they hold, and judge
//! records offline against their cached copy.
//!
//! File format (`tongbu-hub policy set FILE`, `policy show`): [`PolicyDoc`], i.e.
//! `{"catalogue":[{"code","name"}], "negative_list":[{"code","name"}], "settings":{"grace_period_hours":72}}`
//! with `settings` optional. Codes are unique within each list.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::crypto::Domain;
use crate::ids::Code;
use crate::signed::SignedPayload;

/// Default hours a record may be held waiting for its budget line or contract.
pub const DEFAULT_GRACE_PERIOD_HOURS: u32 = 72;
/// Longest grace period a policy may set (one year).
pub const MAX_GRACE_PERIOD_HOURS: u32 = 24 * 366;

/// One catalogue or negative-list entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub code: Code,
    pub name: String,
}

/// Rule settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Hours a held record waits for its predecessor before it is rejected as unknown.
    #[serde(default = "default_grace")]
    pub grace_period_hours: u32,
}

fn default_grace() -> u32 {
    DEFAULT_GRACE_PERIOD_HOURS
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            grace_period_hours: DEFAULT_GRACE_PERIOD_HOURS,
        }
    }
}

/// A policy as people write it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDoc {
    pub catalogue: Vec<Entry>,
    pub negative_list: Vec<Entry>,
    #[serde(default)]
    pub settings: Settings,
}

/// Why a policy document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("not a policy document: {0}")]
    Json(String),
    #[error("the catalogue is empty: nothing could be bought")]
    EmptyCatalogue,
    #[error("{list}: code {code} appears twice")]
    Duplicate { list: &'static str, code: String },
    #[error("{list}: entry {code} has an empty name")]
    EmptyName { list: &'static str, code: String },
    #[error("code {0} is both in the catalogue and on the negative list")]
    Conflict(String),
    #[error("settings.grace_period_hours must be from 1 to {MAX_GRACE_PERIOD_HOURS}, got {0}")]
    Grace(u32),
}

impl PolicyDoc {
    /// Parses and checks a policy document.
    pub fn parse(bytes: &[u8]) -> Result<PolicyDoc, PolicyError> {
        let doc: PolicyDoc =
            serde_json::from_slice(bytes).map_err(|e| PolicyError::Json(e.to_string()))?;
        doc.check()?;
        Ok(doc)
    }

    pub fn check(&self) -> Result<(), PolicyError> {
        if self.catalogue.is_empty() {
            return Err(PolicyError::EmptyCatalogue);
        }
        for (list, entries) in [
            ("catalogue", &self.catalogue),
            ("negative_list", &self.negative_list),
        ] {
            let mut seen = std::collections::BTreeSet::new();
            for e in entries {
                if !seen.insert(&e.code) {
                    return Err(PolicyError::Duplicate {
                        list,
                        code: e.code.to_string(),
                    });
                }
                if e.name.trim().is_empty() {
                    return Err(PolicyError::EmptyName {
                        list,
                        code: e.code.to_string(),
                    });
                }
            }
        }
        if let Some(both) = self
            .catalogue
            .iter()
            .find(|c| self.negative_list.iter().any(|n| n.code == c.code))
        {
            return Err(PolicyError::Conflict(both.code.to_string()));
        }
        let g = self.settings.grace_period_hours;
        if !(1..=MAX_GRACE_PERIOD_HOURS).contains(&g) {
            return Err(PolicyError::Grace(g));
        }
        Ok(())
    }
}

/// A numbered policy version as the hub signs and agents cache it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyBundle {
    pub version: u64,
    pub issued_at_ms: i64,
    pub catalogue: Vec<Entry>,
    pub negative_list: Vec<Entry>,
    pub settings: Settings,
}

impl SignedPayload for PolicyBundle {
    const DOMAIN: Domain = Domain::Policy;
}

impl PolicyBundle {
    pub fn new(version: u64, issued_at_ms: i64, doc: PolicyDoc) -> PolicyBundle {
        PolicyBundle {
            version,
            issued_at_ms,
            catalogue: doc.catalogue,
            negative_list: doc.negative_list,
            settings: doc.settings,
        }
    }

    pub fn doc(&self) -> PolicyDoc {
        PolicyDoc {
            catalogue: self.catalogue.clone(),
            negative_list: self.negative_list.clone(),
            settings: self.settings,
        }
    }

    /// The policy as the rules use it.
    pub fn policy(&self) -> Policy {
        Policy {
            version: self.version,
            catalogue: self
                .catalogue
                .iter()
                .map(|e| (e.code.clone(), e.name.clone()))
                .collect(),
            negative_list: self
                .negative_list
                .iter()
                .map(|e| (e.code.clone(), e.name.clone()))
                .collect(),
            grace_ms: i64::from(self.settings.grace_period_hours) * 3_600_000,
        }
    }
}

/// The policy as the rules consult it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub version: u64,
    pub catalogue: BTreeMap<Code, String>,
    pub negative_list: BTreeMap<Code, String>,
    /// How long a held record may wait, in milliseconds.
    pub grace_ms: i64,
}

fn entries(list: &[(&str, &str)]) -> Vec<Entry> {
    list.iter()
        .filter_map(|(code, name)| {
            Code::parse(code).ok().map(|code| Entry {
                code,
                name: (*name).to_owned(),
            })
        })
        .collect()
}

/// The policy a new hub starts with, drawn from the reform: basic public services, social
/// governance and auxiliary services may be bought; a government's own direct duties,
/// engineering bundled with services, disguised financing, goods and staffing may not.
pub fn default_policy() -> PolicyDoc {
    PolicyDoc {
        catalogue: entries(&[
            ("A0101", "公共教育服务"),
            ("A0201", "就业创业培训服务"),
            ("A0301", "基本医疗公共保险经办服务"),
            ("A0302", "公共卫生服务"),
            ("A0401", "社会工作服务"),
            ("A0501", "居家养老服务"),
            ("A0502", "社区日间照料服务"),
            ("A0503", "机构养老服务"),
            ("A0601", "残疾人康复服务"),
            ("A0602", "残疾人职业技能培训服务"),
            ("A0701", "儿童福利与未成年人保护服务"),
            ("A0801", "公共文化与体育服务"),
            ("A0901", "生态环境保护服务"),
            ("A1001", "乡村振兴服务"),
            ("B0101", "社区治理服务"),
            ("B0201", "社会组织孵化培育服务"),
            ("B0301", "法律援助与人民调解服务"),
            ("D0101", "第三方绩效评价服务"),
            ("E0101", "政府履职辅助性服务(课题研究、统计调查)"),
        ]),
        negative_list: entries(&[
            ("N0101", "应当由政府直接履职的事项(行政决策、许可、处罚等)"),
            ("N0102", "行政执法事项"),
            ("N0201", "工程与服务捆绑外包"),
            ("N0202", "建设工程"),
            ("N0301", "以购买服务名义违规融资"),
            ("N0401", "货物采购"),
            ("N0501", "购买人员、劳务派遣填补编制岗位"),
        ]),
        settings: Settings::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_is_valid() {
        let doc = default_policy();
        assert!(doc.check().is_ok());
        assert!(doc.catalogue.len() >= 15 && doc.negative_list.len() >= 5);
        let p = PolicyBundle::new(1, 0, doc).policy();
        assert_eq!(p.grace_ms, 72 * 3_600_000);
        assert!(p.catalogue.contains_key(&Code::parse("A0501").unwrap()));
    }

    #[test]
    fn bad_documents_are_refused_with_the_reason() {
        let ok = r#"{"catalogue":[{"code":"A0501","name":"居家养老"}],"negative_list":[{"code":"N0201","name":"工程"}]}"#;
        let doc = PolicyDoc::parse(ok.as_bytes()).unwrap();
        assert_eq!(doc.settings.grace_period_hours, 72);
        let cases = [
            (r#"{"catalogue":[],"negative_list":[]}"#, "empty"),
            (
                r#"{"catalogue":[{"code":"A1","name":"x"},{"code":"A1","name":"y"}],"negative_list":[]}"#,
                "twice",
            ),
            (
                r#"{"catalogue":[{"code":"A1","name":"x"}],"negative_list":[{"code":"A1","name":"y"}]}"#,
                "both",
            ),
            (
                r#"{"catalogue":[{"code":"A 1","name":"x"}],"negative_list":[]}"#,
                "not a policy",
            ),
            (
                r#"{"catalogue":[{"code":"A1","name":" "}],"negative_list":[]}"#,
                "empty name",
            ),
            (
                r#"{"catalogue":[{"code":"A1","name":"x"}],"negative_list":[],"settings":{"grace_period_hours":0}}"#,
                "grace",
            ),
            (
                r#"{"catalogue":[{"code":"A1","name":"x"}],"negative_list":[],"extra":1}"#,
                "unknown field",
            ),
        ];
        for (json, why) in cases {
            let e = PolicyDoc::parse(json.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(why), "{json}: {e}");
        }
    }
}
