//! Deployment tests: what systemd, Debian packaging, containers and the operator guide rely on.
//! `notify` starts the real binaries with a fake `NOTIFY_SOCKET`; `units` runs
//! `systemd-analyze verify` on the units in `deploy/systemd/`; `deb` builds both `.deb`
//! packages with cargo-deb, inspects them and runs the hub out of an extracted tree; `container`
//! checks the compose file against the Dockerfiles and example configs; `docs` checks that every
//! command in `docs/OPERATIONS.md` exists. A tool that cannot be had (systemd-analyze, cargo-deb)
//! makes its test print a notice and pass, outside CI only: `.ci/run` installs both.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod container;
mod deb;
mod docs;
mod notify;
mod units;
