//! The agent's one event loop: every input — the session's progress, the master's messages,
//! the run's output, the clock, the shutdown — is an [`Event`] from [`Loop::next_event`], and
//! [`Loop::handle`] applies it. The dead-man switch, reconnects, drains and the shutdown read
//! as one match and are tested with fake events (the shape of rust-analyzer's `main_loop.rs`
//! and the master's control loop).

use std::future::Future;
use std::pin::Pin;

use super::*;
use crate::config::MasterDiscovery;

/// Where the link to the master is.
enum Link {
    /// Opening a session (connect, join, attach).
    Connecting(Pin<Box<dyn Future<Output = Result<Session, SessionError>> + Send>>),
    /// Waiting before the next attempt.
    Waiting(tokio::time::Instant),
    /// A live session (boxed: the stream is large, the other states small).
    Up {
        tx: mpsc::Sender<SlaveMessage>,
        inbound: Box<tonic::Streaming<MasterMessage>>,
    },
}

/// Everything that can happen to the agent.
pub(super) enum Event {
    /// The session attempt ended (boxed: a session is large, most events small).
    Connected(Result<Box<Session>, SessionError>),
    /// The wait before the next attempt is over.
    RetryDue,
    /// A message from the master, the session's end (`Ok(None)`), or its error.
    FromMaster(Result<Option<MasterMessage>, tonic::Status>),
    /// The run produced an interval or an event.
    Output(Output),
    /// 100 ms passed (the dead-man switch looks at the clock).
    Tick,
    /// Time to send a heartbeat (and spooled intervals).
    Heartbeat,
    /// SIGINT/SIGTERM: stop the load and drain.
    Shutdown,
    /// The drain's deadline passed.
    Deadline,
}

/// What the loop does after an event.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Flow {
    Continue,
    Leave,
}

/// The loop's state: the agent's [`State`] plus the link and the clocks.
pub(super) struct Loop {
    cfg: Arc<AgentConfig>,
    pub(super) state: State,
    link: Link,
    backoff: Backoff,
    /// Set once shutting down: leave at this time whatever is left.
    deadline: Option<tokio::time::Instant>,
    tick: tokio::time::Interval,
    /// The master this slave dials now (it may have moved: see `discover_master`).
    master: MasterAddress,
    /// Session attempts that failed in a row.
    failures: u32,
    /// The master's heartbeat period, while a session is up.
    heartbeat: Option<tokio::time::Interval>,
    out_rx: mpsc::Receiver<Output>,
}

impl Loop {
    pub(super) fn new(cfg: Arc<AgentConfig>) -> Self {
        let (out_tx, out_rx) = mpsc::channel::<Output>(256);
        let state = State {
            spool: Spool::default(),
            current: None,
            draining: false,
            gauges: Arc::new(Gauges::default()),
            out_tx,
            last_contact: Instant::now(),
            lease: Duration::from_secs(15),
            resources: crate::resources::Sampler::for_this_runtime(),
            heartbeat_carried: false,
        };
        let master = MasterAddress {
            url: cfg.master.clone(),
            fingerprint: cfg.fingerprint.clone(),
        };
        let link = Link::Connecting(Box::pin(open_session(cfg.clone(), master.clone(), None)));
        Loop {
            master,
            failures: 0,
            backoff: Backoff::new(cfg.backoff_base, cfg.backoff_cap),
            cfg,
            state,
            link,
            deadline: None,
            tick: tokio::time::interval(Duration::from_millis(100)),
            heartbeat: None,
            out_rx,
        }
    }

    /// Runs until the agent leaves (shutdown drained, or its deadline).
    pub(super) async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let event = self.next_event(&shutdown).await;
            if self.handle(event) == Flow::Leave {
                return self.leave();
            }
        }
    }

    /// Waits for the next event (the loop's one `select!`).
    async fn next_event(&mut self, shutdown: &CancellationToken) -> Event {
        let deadline = self.deadline;
        let link = async {
            match &mut self.link {
                Link::Connecting(attempt) => Event::Connected(attempt.await.map(Box::new)),
                Link::Waiting(wake) => {
                    tokio::time::sleep_until(*wake).await;
                    Event::RetryDue
                }
                Link::Up { inbound, .. } => Event::FromMaster(inbound.message().await),
            }
        };
        let heartbeat = async {
            match &mut self.heartbeat {
                Some(h) => h.tick().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            e = link => e,
            _ = heartbeat => Event::Heartbeat,
            Some(o) = self.out_rx.recv() => Event::Output(o),
            _ = self.tick.tick() => Event::Tick,
            _ = shutdown.cancelled(), if deadline.is_none() => Event::Shutdown,
            _ = sleep_opt(deadline) => Event::Deadline,
        }
    }

    /// Applies one event.
    pub(super) fn handle(&mut self, event: Event) -> Flow {
        match event {
            Event::Connected(Ok(session)) => self.attached(*session),
            Event::Connected(Err(e)) => {
                self.heartbeat = None;
                self.failures = self.failures.saturating_add(1);
                let delay = self.backoff.next_delay();
                let ms = delay.as_millis() as u64;
                match &e {
                    SessionError::Refused(_) => {
                        error!(error = %e, retry_in_ms = ms, "join refused")
                    }
                    _ => warn!(error = %e, retry_in_ms = ms, "master unreachable"),
                }
                self.link = Link::Waiting(tokio::time::Instant::now() + delay);
            }
            Event::RetryDue => self.reconnect(),
            Event::FromMaster(Ok(Some(msg))) => {
                self.state.last_contact = Instant::now();
                if let Link::Up { tx, .. } = &self.link {
                    self.state.on_master(msg, tx, &self.cfg);
                }
            }
            Event::FromMaster(Ok(None)) => {
                info!("the master closed the session");
                self.reconnect();
            }
            Event::FromMaster(Err(status)) => {
                warn!(code = ?status.code(), message = status.message(), "session broke");
                self.reconnect();
            }
            Event::Output(o) => {
                let tx = match &self.link {
                    Link::Up { tx, .. } => Some(tx),
                    _ => None,
                };
                self.state.on_output(o, tx);
            }
            Event::Tick => self.state.check_deadman(),
            Event::Heartbeat => {
                if let Link::Up { tx, .. } = &self.link {
                    self.state.flush(tx);
                    if !self.state.heartbeat_carried {
                        let _ = tx.try_send(self.state.heartbeat());
                    }
                }
                self.state.check_deadman();
            }
            Event::Shutdown => {
                self.deadline = Some(begin_shutdown(&mut self.state, &self.cfg));
                if let Link::Up { tx, .. } = &self.link {
                    let _ = tx.try_send(self.state.heartbeat());
                }
            }
            Event::Deadline => return Flow::Leave,
        }
        // An interval carried the heartbeat: the next of its own is due a heartbeat and a
        // quarter after it, so that a slave reporting every second sends one message a
        // second, and one that stops reporting still heartbeats well within the lease
        // (`lobster_fleet::liveness`).
        if std::mem::take(&mut self.state.heartbeat_carried)
            && let Some(h) = &mut self.heartbeat
        {
            let put_off = h.period() * 5 / 4;
            h.reset_after(put_off);
        }
        if self.deadline.is_some() && self.state.finished() {
            Flow::Leave
        } else {
            Flow::Continue
        }
    }

    /// A session is open: reset the backoff, take the master's timings, send the spool.
    fn attached(&mut self, session: Session) {
        self.backoff.reset();
        self.failures = 0;
        // Retry at least twice per lease, so a slave is back within a lease of its master.
        self.backoff.cap_at(session.lease / 2);
        if session.master != self.master {
            info!(master = %session.master.url, "the master moved: following it (instance tags)");
            self.master = session.master.clone();
        }
        info!(slave_id = %session.slave_id, "joined the master");
        // Pause one heartbeat before the lease runs out, so the load has stopped by the time
        // the master would declare this slave lost.
        self.state.lease =
            lobster_fleet::liveness::master_silence_limit(session.lease, session.heartbeat);
        self.state.last_contact = Instant::now();
        self.state.spool.reset_sent();
        self.state.flush(&session.tx);
        let mut heartbeat = tokio::time::interval(session.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.heartbeat = Some(heartbeat);
        self.link = Link::Up {
            tx: session.tx,
            inbound: Box::new(session.inbound),
        };
    }

    /// Opens a new session at once (telling the master which run this slave carries). After a
    /// failed attempt, a slave on a VM first asks its instance's tags where the master is.
    fn reconnect(&mut self) {
        self.heartbeat = None;
        let cfg = self.cfg.clone();
        let known = self.master.clone();
        let run_id = self.state.run_id();
        let discover = self.failures > 0 && cfg.discovery == MasterDiscovery::ImdsTags;
        self.link = Link::Connecting(Box::pin(async move {
            let master = if discover {
                discover_master().await.unwrap_or(known)
            } else {
                known
            };
            open_session(cfg, master, run_id).await
        }));
    }

    fn leave(&self) {
        if !self.state.spool.is_empty() {
            warn!(
                unacknowledged = self.state.spool.len(),
                "leaving with intervals the master never acknowledged"
            );
        }
        info!("slave stopped");
    }

    /// Whether the loop is waiting to reconnect.
    #[cfg(test)]
    fn waiting(&self) -> bool {
        matches!(self.link, Link::Waiting(_))
    }

    /// Whether the loop is opening a session.
    #[cfg(test)]
    fn connecting(&self) -> bool {
        matches!(self.link, Link::Connecting(_))
    }
}

fn begin_shutdown(state: &mut State, cfg: &AgentConfig) -> tokio::time::Instant {
    info!(
        deadline_s = cfg.drain_deadline.as_secs(),
        "shutting down: stopping load, sending the last interval"
    );
    state.draining = true;
    if let Some(c) = &mut state.current {
        c.stopping = true;
        c.stop.cancel();
    }
    tokio::time::Instant::now() + cfg.drain_deadline
}

async fn sleep_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MasterDiscovery;

    fn config() -> Arc<AgentConfig> {
        Arc::new(AgentConfig {
            // Nothing listens here: the first attempt fails, which these tests never await.
            master: "http://127.0.0.1:9".into(),
            join_token: "t".into(),
            fingerprint: String::new(),
            identity: Identity {
                instance_id: "i".into(),
                instance_type: "t".into(),
                region: "r".into(),
                expires_at: String::new(),
                host: "h".into(),
                cores: 1,
                slave_index: 1,
                slaves_on_host: 1,
                boot_id: "b".into(),
                slave_uid: "u".into(),
            },
            discovery: MasterDiscovery::None,
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(1),
            drain_deadline: Duration::from_secs(10),
            trace_dir: std::env::temp_dir().join("lobster-test-traces"),
        })
    }

    /// A run this slave carries, with its stop token.
    fn carry_a_run(l: &mut Loop) -> CancellationToken {
        let text = "name: t\ntarget: http://127.0.0.1:9\nduration: 10s\nload: {users: 1}\nrequests: [{name: r, path: /}]\n";
        let scenario = lobster_fleet::scenario::parse(text, "t.yaml").unwrap();
        let (control, _rx) = watch::channel(LoadControl {
            profile: scenario.load.clone(),
            striping: crate::engine::Striping::whole(),
            load_origin: Instant::now(),
            suspended: false,
            items: Arc::new(Vec::new()),
            max_connections: 1,
            stop_at_ms: None,
        });
        std::mem::forget(_rx);
        let stop = CancellationToken::new();
        l.state.current = Some(state::Current {
            run_id: "r-1".into(),
            control,
            stop: stop.clone(),
            stopping: false,
            deadman: false,
            master_suspended: false,
        });
        stop
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_attempt_waits_then_connects_again() {
        let mut l = Loop::new(config());
        let flow = l.handle(Event::Connected(Err(SessionError::Connect(
            "refused".into(),
        ))));
        assert_eq!(flow, Flow::Continue);
        assert!(l.waiting());
        assert_eq!(l.handle(Event::RetryDue), Flow::Continue);
        assert!(l.connecting());
        // A session that ends reconnects at once, without a wait.
        l.handle(Event::FromMaster(Ok(None)));
        assert!(l.connecting());
        l.handle(Event::FromMaster(Err(tonic::Status::unavailable("gone"))));
        assert!(l.connecting());
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_slave_leaves_at_once_on_shutdown() {
        let mut l = Loop::new(config());
        assert_eq!(l.handle(Event::Shutdown), Flow::Leave);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_slave_stops_its_load_and_stays_until_its_run_is_done() {
        let mut l = Loop::new(config());
        let stop = carry_a_run(&mut l);
        assert_eq!(l.handle(Event::Shutdown), Flow::Continue);
        assert!(stop.is_cancelled(), "the load was told to stop");
        assert!(l.state.draining);
        // The run's last interval arrives: nothing is left but the spool, which the master
        // has not acknowledged: stay.
        let last = Output::Interval {
            run_id: "r-1".into(),
            index: 3,
            stats: Default::default(),
            last: true,
        };
        assert_eq!(l.handle(Event::Output(last)), Flow::Continue);
        assert_eq!(l.state.spool.len(), 1);
        // Acknowledged: leave.
        l.state.spool.ack("r-1", &[3]);
        assert_eq!(l.handle(Event::Tick), Flow::Leave);
        // The drain's deadline leaves whatever is left.
        let mut l = Loop::new(config());
        carry_a_run(&mut l);
        l.handle(Event::Shutdown);
        assert_eq!(l.handle(Event::Deadline), Flow::Leave);
    }

    /// The first interval a flush sends carries the heartbeat; the loop then puts its own
    /// heartbeat off by a heartbeat and a quarter (one message a second while reporting).
    #[tokio::test(start_paused = true)]
    async fn an_interval_carries_the_heartbeat_and_puts_off_the_next() {
        let mut l = Loop::new(config());
        carry_a_run(&mut l);
        let (tx, mut rx) = mpsc::channel(8);
        for index in [0, 1] {
            let msg = lobster_fleet::stats::IntervalStats::default().to_proto("r-1", index, false);
            l.state.spool.push("r-1".into(), msg);
        }
        l.state.flush(&tx);
        let sent: Vec<proto::StatsInterval> = std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(|m| match m.kind {
                Some(Up::Stats(s)) => Some(s),
                _ => None,
            })
            .collect();
        assert_eq!(sent.len(), 2);
        let hb = sent[0]
            .heartbeat
            .as_ref()
            .expect("the first carries the heartbeat");
        assert_eq!(
            (hb.run_id.as_str(), hb.state, hb.spooled),
            ("r-1", SlaveState::Running as i32, 2)
        );
        assert_eq!(sent[1].heartbeat, None, "one heartbeat per flush");
        assert!(l.state.heartbeat_carried);
        // The loop takes the flag and puts its heartbeat off: not due after 1.2 s, due by 1.25 s.
        l.heartbeat = Some(tokio::time::interval(Duration::from_secs(1)));
        l.handle(Event::Tick);
        assert!(!l.state.heartbeat_carried);
        let h = l.heartbeat.as_mut().unwrap();
        let early = tokio::time::timeout(Duration::from_millis(1200), h.tick()).await;
        assert!(early.is_err(), "the heartbeat was not put off");
        let due = tokio::time::timeout(Duration::from_millis(100), h.tick()).await;
        assert!(due.is_ok(), "the heartbeat was put off too long");
        // Nothing due: no interval, nothing carried.
        l.state.flush(&tx);
        assert!(rx.try_recv().is_err());
        assert!(!l.state.heartbeat_carried);
    }

    #[tokio::test(start_paused = true)]
    async fn the_dead_man_switch_pauses_the_load_when_the_master_is_silent() {
        let mut l = Loop::new(config());
        carry_a_run(&mut l);
        l.state.lease = Duration::from_secs(2);
        l.state.last_contact = Instant::now() - Duration::from_secs(1);
        l.handle(Event::Tick);
        assert!(
            !l.state.current.as_ref().unwrap().deadman,
            "within the lease"
        );
        l.state.last_contact = Instant::now() - Duration::from_secs(3);
        l.handle(Event::Tick);
        let c = l.state.current.as_ref().unwrap();
        assert!(
            c.deadman && c.control.borrow().suspended,
            "paused past the lease"
        );
    }
}
