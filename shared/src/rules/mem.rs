//! An in-memory ledger: the reference model the property tests check the rules against, and
//! the local view an agent judges its own records with. Same engine, maps instead of tables.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::engine::{Decision, LedgerStore};
use super::{Entity, EntityKey, Pending, Slot, Totals, TotalsDelta};
use crate::ids::{AgentId, CountyCode};
use crate::policy::Policy;

/// Why the in-memory ledger refused a change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemError {
    #[error("policy version {0} is unknown")]
    UnknownPolicy(u64),
    #[error("totals of {0} would go below zero or overflow")]
    Totals(String),
}

/// A whole ledger in memory.
#[derive(Debug, Clone, Default)]
pub struct MemLedger {
    pub policies: HashMap<u64, Arc<Policy>>,
    pub entities: HashMap<EntityKey, Entity>,
    pub totals: BTreeMap<(CountyCode, Slot), Totals>,
    held: BTreeMap<u64, (Pending, EntityKey)>,
    pub decisions: HashMap<(AgentId, u64), Decision>,
}

impl MemLedger {
    pub fn new(policy: Policy) -> MemLedger {
        let mut m = MemLedger::default();
        m.policies.insert(policy.version, Arc::new(policy));
        m
    }

    /// The totals of one county and fiscal year, summed over catalogue codes.
    pub fn year_totals(&self, county: &CountyCode, year: i32) -> Totals {
        self.totals
            .iter()
            .filter(|((c, s), _)| c == county && s.year == year)
            .fold(Totals::default(), |acc, (_, t)| acc.plus(t).unwrap_or(acc))
    }

    /// How many records are held now.
    pub fn held_count(&self) -> usize {
        self.held.len()
    }
}

impl LedgerStore for MemLedger {
    type Error = MemError;

    fn policy(&mut self, version: u64) -> Result<Arc<Policy>, MemError> {
        self.policies
            .get(&version)
            .cloned()
            .ok_or(MemError::UnknownPolicy(version))
    }

    fn entity(&mut self, key: &EntityKey) -> Result<Option<Entity>, MemError> {
        Ok(self.entities.get(key).cloned())
    }

    fn put_entity(&mut self, key: &EntityKey, entity: &Entity) -> Result<(), MemError> {
        self.entities.insert(key.clone(), entity.clone());
        Ok(())
    }

    fn add_totals(
        &mut self,
        county: &CountyCode,
        slot: &Slot,
        delta: &TotalsDelta,
    ) -> Result<(), MemError> {
        let k = (county.clone(), slot.clone());
        let now = self.totals.get(&k).copied().unwrap_or_default();
        let next = now.apply(delta).ok_or_else(|| {
            MemError::Totals(format!("{county} {} {}", slot.year, slot.catalogue))
        })?;
        self.totals.insert(k, next);
        Ok(())
    }

    fn hold(&mut self, pending: &Pending, waits_on: &EntityKey) -> Result<(), MemError> {
        self.held
            .insert(pending.order, (pending.clone(), waits_on.clone()));
        Ok(())
    }

    fn release(&mut self, key: &EntityKey) -> Result<Vec<Pending>, MemError> {
        let orders: Vec<u64> = self
            .held
            .iter()
            .filter(|(_, (_, w))| w == key)
            .map(|(o, _)| *o)
            .collect();
        Ok(orders
            .into_iter()
            .filter_map(|o| self.held.remove(&o))
            .map(|(p, _)| p)
            .collect())
    }

    fn take_expired(&mut self, cutoff_ms: i64) -> Result<Vec<(Pending, EntityKey)>, MemError> {
        let orders: Vec<u64> = self
            .held
            .iter()
            .filter(|(_, (p, _))| p.received_ms < cutoff_ms)
            .map(|(o, _)| *o)
            .collect();
        Ok(orders
            .into_iter()
            .filter_map(|o| self.held.remove(&o))
            .collect())
    }

    fn decide(&mut self, decision: &Decision) -> Result<(), MemError> {
        self.decisions
            .insert((decision.agent.clone(), decision.seq), decision.clone());
        Ok(())
    }
}
