//! One function per rule code. Each decides one thing from plain values and returns the
//! finding when its rule applies; [`evaluate`](super::engine::evaluate) calls the ones that fit
//! a record and keeps every finding.

use super::{Entity, Facts, Finding, Rule};
use crate::date::Date;
use crate::ids::{Code, CountyCode};
use crate::money::Fen;
use crate::policy::Policy;
use crate::record::{Kind, SupplierCode};

/// `COUNTY_MISMATCH`: a record's county must be its agent's county.
pub fn county_mismatch(record_county: &CountyCode, agent_county: &CountyCode) -> Option<Finding> {
    (record_county != agent_county).then(|| {
        Finding::new(
            Rule::CountyMismatch,
            format!("the record is for county {record_county} but was sent by an agent of county {agent_county}"),
        )
    })
}

/// `INVALID_SUPPLIER_CODE`: a contract's supplier code must carry a correct check character.
pub fn invalid_supplier_code(supplier: &SupplierCode) -> Option<Finding> {
    match supplier {
        SupplierCode::Valid(_) => None,
        SupplierCode::Invalid { code, problem } => Some(Finding::new(
            Rule::InvalidSupplierCode,
            format!("supplier code {code:?} is not a valid unified social credit code: {problem}"),
        )),
    }
}

/// `NOT_IN_CATALOGUE`: only services in the current guidance catalogue may be bought.
pub fn not_in_catalogue(code: &Code, policy: &Policy) -> Option<Finding> {
    (!policy.catalogue.contains_key(code)).then(|| {
        Finding::new(
            Rule::NotInCatalogue,
            format!(
                "catalogue code {code} is not in the guidance catalogue (policy version {})",
                policy.version
            ),
        )
    })
}

/// `NEGATIVE_LIST`: nothing on the negative list may be bought as a service.
pub fn negative_list(code: &Code, policy: &Policy) -> Option<Finding> {
    policy.negative_list.get(code).map(|name| {
        Finding::new(
            Rule::NegativeList,
            format!(
                "catalogue code {code} ({name}) is on the negative list (policy version {})",
                policy.version
            ),
        )
    })
}

/// `STALE_REVISION`: a revision must be newer than every revision already decided.
pub fn stale_revision(rev: u32, entity: Option<&Entity>) -> Option<Finding> {
    let latest = entity.map_or(0, Entity::latest_rev);
    (rev <= latest).then(|| {
        Finding::new(
            Rule::StaleRevision,
            format!("rev {rev} is not newer than rev {latest}, already received"),
        )
    })
}

/// `BUDGET_NOT_APPROVED`: a contract needs an approved budget line (and a budget line with
/// contracts on it cannot go back to an unapproved stage).
pub fn budget_not_approved(line_id: &Code, approved: bool) -> Option<Finding> {
    (!approved).then(|| {
        Finding::new(
            Rule::BudgetNotApproved,
            format!("budget line {line_id} is not approved"),
        )
    })
}

/// `YEAR_MISMATCH`: a contract is signed within its budget line's fiscal year.
pub fn year_mismatch(signed_on: Date, line_id: &Code, fiscal_year: i32) -> Option<Finding> {
    (signed_on.year() != fiscal_year).then(|| {
        Finding::new(
            Rule::YearMismatch,
            format!(
                "signed on {signed_on}, outside budget line {line_id}'s fiscal year {fiscal_year}"
            ),
        )
    })
}

/// `DATE_ORDER`: approval ≤ signing ≤ payment (and signing ≤ evaluation).
pub fn date_order(earlier: (&str, Date), later: (&str, Date)) -> Option<Finding> {
    (later.1 < earlier.1).then(|| {
        Finding::new(
            Rule::DateOrder,
            format!(
                "{} {} is before {} {}",
                later.0, later.1, earlier.0, earlier.1
            ),
        )
    })
}

/// `BUDGET_EXCEEDED`: contracts on a budget line never exceed its amount. `committed` is what
/// other accepted contracts already hold on it.
pub fn budget_exceeded(
    line_id: &Code,
    budget: Fen,
    committed: Fen,
    amount: Fen,
) -> Option<Finding> {
    exceeds(budget, committed, amount).then(|| {
        Finding::new(
            Rule::BudgetExceeded,
            format!(
                "{} fen would bring budget line {line_id} to {} contracted, over its {} fen",
                amount.get(),
                committed
                    .checked_add(amount)
                    .map_or_else(|| "more than 10^18".into(), |t| t.get().to_string()),
                budget.get()
            ),
        )
    })
}

/// `CONTRACT_EXCEEDED`: payments on a contract never exceed its amount. `paid` is what other
/// accepted payments already hold on it.
pub fn contract_exceeded(
    contract_id: &Code,
    contract: Fen,
    paid: Fen,
    amount: Fen,
) -> Option<Finding> {
    exceeds(contract, paid, amount).then(|| {
        Finding::new(
            Rule::ContractExceeded,
            format!(
                "{} fen would bring contract {contract_id} to {} paid, over its {} fen",
                amount.get(),
                paid.checked_add(amount)
                    .map_or_else(|| "more than 10^18".into(), |t| t.get().to_string()),
                contract.get()
            ),
        )
    })
}

fn exceeds(limit: Fen, committed: Fen, amount: Fen) -> bool {
    committed
        .checked_add(amount)
        .is_none_or(|total| total > limit)
}

/// `BUDGET_EXCEEDED` / `CONTRACT_EXCEEDED` for an amendment: a budget line cannot be amended
/// (or cancelled) below what is contracted on it, nor a contract below what is paid on it.
pub fn amended_below_committed(
    kind: Kind,
    id: &Code,
    new_amount: Fen,
    committed: Fen,
) -> Option<Finding> {
    if new_amount >= committed {
        return None;
    }
    let (rule, what) = match kind {
        Kind::BudgetLine => (Rule::BudgetExceeded, "contracted"),
        _ => (Rule::ContractExceeded, "paid"),
    };
    Some(Finding::new(
        rule,
        format!(
            "{kind} {id} would be {} fen, below the {} fen already {what} on it",
            new_amount.get(),
            committed.get()
        ),
    ))
}

/// What the predecessor of a record (its budget line or contract) allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Predecessor<'a> {
    /// It stands: check against it.
    Live(&'a Facts),
    /// It has not arrived (or only a held revision has): wait for it.
    Missing(Finding),
    /// It was rejected or cancelled: so is this record.
    Refused(Finding),
}

/// `AWAITING_*`, `PREDECESSOR_REJECTED`, `CANCELLED_PREDECESSOR`: looks at a record's budget
/// line or contract.
pub fn predecessor<'a>(kind: Kind, id: &Code, entity: Option<&'a Entity>) -> Predecessor<'a> {
    let awaiting = match kind {
        Kind::BudgetLine => Rule::AwaitingBudgetLine,
        _ => Rule::AwaitingContract,
    };
    match entity {
        None => Predecessor::Missing(Finding::new(
            awaiting,
            format!("{kind} {id} has not arrived yet"),
        )),
        Some(e) => match &e.current {
            None => Predecessor::Refused(Finding::new(
                Rule::PredecessorRejected,
                format!("{kind} {id} was rejected"),
            )),
            Some(f) if f.cancelled => Predecessor::Refused(Finding::new(
                Rule::CancelledPredecessor,
                format!("{kind} {id} was cancelled (rev {})", f.rev),
            )),
            Some(f) => Predecessor::Live(f),
        },
    }
}

/// The rule that rejects a held record when the grace period ends.
pub fn unknown_predecessor(kind: Kind, id: &Code, waited_hours: i64) -> Finding {
    let rule = match kind {
        Kind::BudgetLine => Rule::UnknownBudgetLine,
        _ => Rule::UnknownContract,
    };
    Finding::new(
        rule,
        format!("{kind} {id} did not arrive within {waited_hours} h"),
    )
}

/// `PAID_WITHOUT_EVALUATION` (warning): the final payment of a contract without a performance
/// evaluation.
pub fn paid_without_evaluation(
    contract_id: &Code,
    contract: Fen,
    paid_after: Fen,
    evaluated: bool,
) -> Option<Finding> {
    (paid_after == contract && !evaluated).then(|| {
        Finding::new(
            Rule::PaidWithoutEvaluation,
            format!("final payment of contract {contract_id} without a performance evaluation"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{PolicyBundle, default_policy};

    fn code(s: &str) -> Code {
        Code::parse(s).unwrap()
    }
    fn fen(v: i64) -> Fen {
        Fen::parse_amount(v).unwrap()
    }
    fn date(s: &str) -> Date {
        Date::parse(s).unwrap()
    }
    fn policy() -> Policy {
        PolicyBundle::new(3, 0, default_policy()).policy()
    }

    #[test]
    fn county_mismatch_compares_the_agents_county() {
        let a = CountyCode::parse("430112").unwrap();
        let b = CountyCode::parse("431281").unwrap();
        assert!(county_mismatch(&a, &a).is_none());
        assert_eq!(
            county_mismatch(&a, &b).map(|f| f.rule),
            Some(Rule::CountyMismatch)
        );
    }

    #[test]
    fn invalid_supplier_code_flags_only_invalid_codes() {
        let valid = SupplierCode::Valid(crate::Uscc::parse("91350100M000100Y43").unwrap());
        assert!(invalid_supplier_code(&valid).is_none());
        let bad = SupplierCode::Invalid {
            code: "X".into(),
            problem: "must be 18 characters".into(),
        };
        assert_eq!(
            invalid_supplier_code(&bad).map(|f| f.rule),
            Some(Rule::InvalidSupplierCode)
        );
    }

    #[test]
    fn catalogue_and_negative_list() {
        let p = policy();
        assert!(not_in_catalogue(&code("A0501"), &p).is_none());
        let f = not_in_catalogue(&code("Z9999"), &p).unwrap();
        assert!(f.detail.contains("version 3"), "{}", f.detail);
        assert!(negative_list(&code("A0501"), &p).is_none());
        assert_eq!(
            negative_list(&code("N0201"), &p).map(|f| f.rule),
            Some(Rule::NegativeList)
        );
    }

    #[test]
    fn stale_revision_needs_a_newer_rev() {
        let mut e = Entity::default();
        assert!(stale_revision(1, None).is_none());
        e.revs.push(super::super::RevSeen {
            rev: 2,
            digest: crate::Digest::GENESIS,
            accepted: false,
        });
        assert!(stale_revision(3, Some(&e)).is_none());
        assert_eq!(
            stale_revision(2, Some(&e)).map(|f| f.rule),
            Some(Rule::StaleRevision)
        );
        assert!(stale_revision(1, Some(&e)).is_some());
    }

    #[test]
    fn budget_not_approved_and_year_mismatch() {
        assert!(budget_not_approved(&code("BL"), true).is_none());
        assert_eq!(
            budget_not_approved(&code("BL"), false).map(|f| f.rule),
            Some(Rule::BudgetNotApproved)
        );
        assert!(year_mismatch(date("2024-12-31"), &code("BL"), 2024).is_none());
        assert_eq!(
            year_mismatch(date("2025-01-01"), &code("BL"), 2024).map(|f| f.rule),
            Some(Rule::YearMismatch)
        );
    }

    #[test]
    fn date_order_allows_the_same_day() {
        assert!(
            date_order(
                ("approved_on", date("2024-03-01")),
                ("signed_on", date("2024-03-01"))
            )
            .is_none()
        );
        let f = date_order(
            ("signed_on", date("2024-03-02")),
            ("paid_on", date("2024-03-01")),
        )
        .unwrap();
        assert_eq!(f.rule, Rule::DateOrder);
        assert_eq!(
            f.detail,
            "paid_on 2024-03-01 is before signed_on 2024-03-02"
        );
    }

    #[test]
    fn amounts_may_reach_but_not_pass_the_limit() {
        assert!(budget_exceeded(&code("BL"), fen(100), fen(60), fen(40)).is_none());
        assert_eq!(
            budget_exceeded(&code("BL"), fen(100), fen(60), fen(41)).map(|f| f.rule),
            Some(Rule::BudgetExceeded)
        );
        assert!(contract_exceeded(&code("C"), fen(100), Fen::ZERO, fen(100)).is_none());
        assert_eq!(
            contract_exceeded(&code("C"), fen(100), fen(1), fen(100)).map(|f| f.rule),
            Some(Rule::ContractExceeded)
        );
        // Sums that would overflow are exceeded, not wrapped.
        let max = Fen::from_total(i64::MAX).unwrap();
        assert!(contract_exceeded(&code("C"), fen(100), max, fen(1)).is_some());
    }

    #[test]
    fn amendments_below_what_is_committed() {
        assert!(amended_below_committed(Kind::BudgetLine, &code("BL"), fen(50), fen(50)).is_none());
        assert_eq!(
            amended_below_committed(Kind::BudgetLine, &code("BL"), fen(49), fen(50))
                .map(|f| f.rule),
            Some(Rule::BudgetExceeded)
        );
        assert_eq!(
            amended_below_committed(Kind::Contract, &code("C"), Fen::ZERO, fen(1)).map(|f| f.rule),
            Some(Rule::ContractExceeded)
        );
    }

    #[test]
    fn predecessors_wait_refuse_or_stand() {
        let id = code("BL");
        assert!(
            matches!(predecessor(Kind::BudgetLine, &id, None), Predecessor::Missing(f) if f.rule == Rule::AwaitingBudgetLine)
        );
        assert!(
            matches!(predecessor(Kind::Contract, &id, None), Predecessor::Missing(f) if f.rule == Rule::AwaitingContract)
        );
        let rejected = Entity::default();
        assert!(
            matches!(predecessor(Kind::BudgetLine, &id, Some(&rejected)), Predecessor::Refused(f) if f.rule == Rule::PredecessorRejected)
        );
        let facts = Facts {
            rev: 2,
            cancelled: true,
            amount: Some(fen(5)),
            approved: true,
            date: None,
            fiscal_year: 2024,
            catalogue: None,
            parent: None,
        };
        let cancelled = Entity {
            current: Some(facts.clone()),
            ..Entity::default()
        };
        assert!(
            matches!(predecessor(Kind::BudgetLine, &id, Some(&cancelled)), Predecessor::Refused(f) if f.rule == Rule::CancelledPredecessor)
        );
        let live = Entity {
            current: Some(Facts {
                cancelled: false,
                ..facts
            }),
            ..Entity::default()
        };
        assert!(matches!(
            predecessor(Kind::BudgetLine, &id, Some(&live)),
            Predecessor::Live(_)
        ));
        assert_eq!(
            unknown_predecessor(Kind::Contract, &id, 72).rule,
            Rule::UnknownContract
        );
        assert_eq!(
            unknown_predecessor(Kind::BudgetLine, &id, 72).rule,
            Rule::UnknownBudgetLine
        );
    }

    #[test]
    fn paid_without_evaluation_only_on_the_final_payment() {
        assert!(paid_without_evaluation(&code("C"), fen(100), fen(99), false).is_none());
        assert!(paid_without_evaluation(&code("C"), fen(100), fen(100), true).is_none());
        assert_eq!(
            paid_without_evaluation(&code("C"), fen(100), fen(100), false).map(|f| f.rule),
            Some(Rule::PaidWithoutEvaluation)
        );
    }

    #[test]
    fn every_rule_code_round_trips() {
        for r in Rule::ALL {
            assert_eq!(Rule::parse(r.code()), Some(*r));
        }
        assert_eq!(Rule::ALL.len(), 17);
    }
}
