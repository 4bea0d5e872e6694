//! `[metrics] listen`: the HTTP server ([`http`](super::http)) and the latency recorder
//! ([`metrics`](super::metrics)) as the watch loop sees them, so that the loop only binds,
//! registers, dispatches its tokens and lends its counters.
//!
//! The address is bound before anything else starts (sinks, shards), so that an address in
//! use stops watch at once with a message naming the setting. It is read at start only: a
//! SIGHUP keeps the running endpoint.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use mio::{Registry, Token};

use super::http::{Asset, Page, Server};
use super::metrics::{render_bans, render_metrics, Recorder, View};
use super::procstat::ProcStat;
use crate::decide::ban_table::BanTable;
use crate::decide::Event;
use crate::error::Error;

pub(crate) struct Endpoint {
    server: Option<Server>,
    latency: Recorder,
    /// When watch started (`process_start_time_seconds`).
    started: SystemTime,
}

impl Endpoint {
    /// Binds `listen` (none: an endpoint that serves nothing) and says where on stderr.
    pub(crate) fn bind(listen: Option<SocketAddr>, dashboard: bool) -> Result<Endpoint, Error> {
        let server = match listen {
            Some(addr) => {
                let s = Server::bind(addr).map_err(|source| Error::Listen {
                    key: "[metrics] listen",
                    addr,
                    source,
                })?;
                log::info!("metrics on http://{}/metrics", s.local_addr());
                if dashboard {
                    log::info!("dashboard on http://{}/", s.local_addr());
                }
                Some(s.with_dashboard(dashboard))
            }
            None => None,
        };
        Ok(Endpoint {
            server,
            latency: Recorder::new(),
            started: SystemTime::now(),
        })
    }

    /// Registers the listener as `base`: every token from `base` on is then the endpoint's.
    pub(crate) fn register(&mut self, registry: &Registry, base: Token) -> Result<(), Error> {
        match &mut self.server {
            Some(s) => s.register(registry, base).map_err(Error::system("epoll")),
            None => Ok(()),
        }
    }

    pub(crate) fn owns(&self, token: Token) -> bool {
        self.server.as_ref().is_some_and(|s| s.owns(token))
    }

    /// Handles an event on one of the endpoint's tokens; `view` lends the loop's counters when
    /// `/metrics` is to be rendered (it reads every file's size: not for `/bans`, which only
    /// needs the ban `table`); `api` renders the dashboard's JSON.
    pub(crate) fn ready<'a>(
        &mut self,
        registry: &Registry,
        token: Token,
        table: &BanTable,
        view: &dyn Fn() -> View<'a>,
        api: &mut dyn FnMut(Page, &mut Vec<u8>),
    ) {
        let Endpoint {
            server,
            latency,
            started,
        } = self;
        if let Some(s) = server {
            s.ready(registry, token, &mut |page, out| match page {
                Page::Metrics => render_metrics(&view(), latency, &ProcStat::read(*started), out),
                Page::Bans => render_bans(table, out),
                // Answered by the loop itself: it is turning.
                Page::Health => out.extend_from_slice(b"ok\n"),
                Page::Dashboard(asset) => out.extend_from_slice(dashboard_file(asset)),
                Page::ApiTop { .. } | Page::ApiHistory => api(page, out),
            });
        }
    }

    /// Records a ban's latency as it is emitted.
    pub(crate) fn on_event(&mut self, ev: &Event) {
        if self.server.is_some() {
            self.latency.on_event(ev, crate::clock::wall_ms());
        }
    }

    /// Closes connections whose time is up.
    pub(crate) fn expire(&mut self, registry: &Registry, now: Instant) {
        if let Some(s) = &mut self.server {
            s.expire(registry, now);
        }
    }

    /// When [`Endpoint::expire`] next has something to do.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.server.as_ref().and_then(Server::next_deadline)
    }
}

/// The dashboard's files, built into the binary: nothing is fetched from elsewhere.
fn dashboard_file(asset: Asset) -> &'static [u8] {
    match asset {
        Asset::Html => include_str!("dashboard/index.html").as_bytes(),
        Asset::Script => include_str!("dashboard/dashboard.js").as_bytes(),
        Asset::Style => include_str!("dashboard/dashboard.css").as_bytes(),
    }
}
