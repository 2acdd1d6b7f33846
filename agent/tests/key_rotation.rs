//! `rotate-key` against the fake hub: the new key is used only once the hub confirmed it, old
//! envelopes still verify with the old key, a refusal keeps the old key, and a rotation
//! interrupted after the hub took it (lost reply) or before (hub down) is settled on the next
//! start by asking the hub with the new key.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{FakeHub, RotateMode, agent_id, append_payments, enrollment};
use tongbu_agent::clock::SystemClock;
use tongbu_agent::data_dir::DataDir;
use tongbu_agent::keyfile;
use tongbu_agent::outbox::{Enrollment, Outbox, SharedOutbox};
use tongbu_agent::rotate::{self, Recovered, RotateError};
use tongbu_agent::sync::Syncer;
use tongbu_shared::KeyPair;

struct Agent {
    hub: FakeHub,
    dir: DataDir,
    outbox: Outbox,
    enrollment: Enrollment,
    _tmp: tempfile::TempDir,
}

async fn agent(records: u64) -> Agent {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::open(&tmp.path().join("data")).unwrap();
    let key = keyfile::load_or_create(&dir.key_path(), &ring::rand::SystemRandom::new()).unwrap();
    let hub = FakeHub::start(Some(key.public_key()), &[]).await;
    let mut outbox = Outbox::open(&dir.outbox_path()).unwrap();
    let enrollment = enrollment(&hub.url);
    outbox.save_enrollment(&enrollment).unwrap();
    append_payments(&mut outbox, &key, 1, records);
    Agent {
        hub,
        dir,
        outbox,
        enrollment,
        _tmp: tmp,
    }
}

impl Agent {
    fn key(&self) -> KeyPair {
        keyfile::load(&self.dir.key_path()).unwrap()
    }

    async fn rotate(&mut self) -> Result<tongbu_shared::protocol::KeyRotated, RotateError> {
        rotate::rotate_key(
            &self.dir,
            &mut self.outbox,
            &self.enrollment,
            Arc::new(SystemClock),
        )
        .await
    }

    async fn recover(&mut self) -> Result<Recovered, RotateError> {
        rotate::recover(
            &self.dir,
            &mut self.outbox,
            &self.enrollment,
            Arc::new(SystemClock),
        )
        .await
    }

    async fn sync(&self) {
        let mut syncer = Syncer::new(
            SharedOutbox::new(Outbox::open(&self.dir.outbox_path()).unwrap()),
            &self.enrollment,
            Arc::new(self.key()),
            Arc::new(SystemClock),
            100,
        )
        .unwrap();
        syncer.sync_once().await.unwrap();
    }

    fn no_leftovers(&self) {
        assert!(!self.dir.new_key_path().exists());
        assert!(!self.dir.old_key_path().exists());
        assert_eq!(self.outbox.pending_rotation().unwrap(), None);
    }
}

#[tokio::test]
async fn a_confirmed_rotation_switches_keys_and_old_envelopes_still_verify() {
    let mut a = agent(3).await;
    let old = a.key();
    let confirmed = a.rotate().await.unwrap();
    let new = a.key();
    assert_ne!(new.public_key(), old.public_key());
    assert_eq!(confirmed.public_key, new.public_key());
    assert_eq!(confirmed.last_old_seq, 3);
    assert_eq!(a.hub.lock().agent_key, Some(new.public_key()));
    a.no_leftovers();

    // Seqs 1-3 (old key) and 4-5 (new key) all reach the hub and verify locally.
    append_payments(&mut a.outbox, &new, 4, 5);
    a.sync().await;
    assert_eq!(a.hub.chain().len(), 5);
    let ring = a.outbox.key_ring(new.public_key()).unwrap();
    assert_eq!(ring.retired, vec![(old.public_key(), 3)]);
    tongbu_agent::verify::verify_chain(&a.outbox, &agent_id(), &ring).unwrap();
}

#[tokio::test]
async fn a_refused_rotation_keeps_the_old_key() {
    let mut a = agent(2).await;
    let old = a.key();
    a.hub.lock().rotate_mode = RotateMode::Refuse;
    let err = a.rotate().await.unwrap_err();
    assert!(matches!(err, RotateError::Refused(_)), "{err}");
    assert!(err.to_string().contains("bad_key_rotation"), "{err}");
    assert_eq!(a.key().public_key(), old.public_key());
    assert_eq!(a.hub.lock().agent_key, Some(old.public_key()));
    a.no_leftovers();
    a.sync().await;
    assert_eq!(a.hub.chain().len(), 2);
}

#[tokio::test]
async fn a_lost_confirmation_is_settled_with_the_new_key() {
    let mut a = agent(2).await;
    let old = a.key();
    a.hub.lock().rotate_mode = RotateMode::LoseReply;
    let err = a.rotate().await.unwrap_err();
    assert!(matches!(err, RotateError::InDoubt(_)), "{err}");
    // Not confirmed: agent.key is untouched and nothing may be signed meanwhile.
    assert_eq!(a.key().public_key(), old.public_key());
    assert!(a.dir.new_key_path().exists());
    assert!(
        rotate::pending_problem(&a.dir, &a.outbox)
            .unwrap()
            .is_some()
    );
    // The next start asks the hub with the new key, which it accepts.
    assert_eq!(a.recover().await.unwrap(), Recovered::Finished);
    assert_eq!(Some(a.key().public_key()), a.hub.lock().agent_key);
    assert_ne!(a.key().public_key(), old.public_key());
    a.no_leftovers();
    a.sync().await;
    assert_eq!(a.hub.chain().len(), 2);
}

#[tokio::test]
async fn a_rotation_the_hub_never_took_is_undone() {
    let mut a = agent(2).await;
    let old = a.key();
    a.hub.lock().rotate_mode = RotateMode::Unavailable;
    assert!(matches!(
        a.rotate().await.unwrap_err(),
        RotateError::InDoubt(_)
    ));
    assert_eq!(a.recover().await.unwrap(), Recovered::Undone);
    assert_eq!(a.key().public_key(), old.public_key());
    a.no_leftovers();
    // Once the hub takes rotations again, rotating works.
    a.hub.lock().rotate_mode = RotateMode::Honest;
    a.rotate().await.unwrap();
    a.no_leftovers();
    a.sync().await;
    assert_eq!(a.hub.chain().len(), 2);
}
