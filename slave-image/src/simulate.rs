//! `lobster-slave simulate --count N`: many simulated slaves in one process, for measuring the
//! master's control plane (`scripts/bench/control-plane`).
//!
//! Each simulated slave speaks the real wire contract over the real channel (TLS with the
//! pinned fingerprint, the join token): `Join`, a `Session` opened with `Attach`, a heartbeat
//! every heartbeat period, and, while a run is assigned, one `StatsInterval` per second with
//! `endpoints` endpoints, each with histograms of [`SAMPLES`] latencies and their waiting and
//! receiving phases, as a real slave's (taken in turn from [`VARIANTS`] pre-made seconds: the
//! master's work does not depend on the values, and one core can then simulate thousands of
//! slaves). It sends no HTTP load. Sessions share one HTTP/2 connection per [`PER_CHANNEL`] slaves (a real fleet has one
//! each; the master's work per message is the same).
//!
//! It measures what a slave sees: when each share arrived (from the start of the process'
//! first assignment), and the round trip from sending an interval to its `Ack`. At the end it
//! prints one JSON line of [`Summary`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use lobster_fleet::proto::{
    self, EventKind, SlaveMessage, SlaveState, control_client::ControlClient,
    master_message::Kind as Down, slave_message::Kind as Up,
};
use lobster_fleet::stats::{EndpointStats, IntervalStats};
use rand::{Rng, SeedableRng, rngs::SmallRng};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::agent::AgentConfig;

/// Latency samples recorded per endpoint per interval.
pub const SAMPLES: u64 = 50;
/// Different pre-made seconds the simulated slaves take turns sending.
pub const VARIANTS: usize = 64;
/// Simulated slaves per HTTP/2 connection.
pub const PER_CHANNEL: usize = 100;

/// Flags of `lobster-slave simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Simulated slaves (1 to 20000).
    #[arg(long, default_value_t = 100, allow_negative_numbers = true,
          value_parser = lobster_fleet::flags::whole(1u32, 20_000, ""))]
    pub count: u32,
    /// Endpoints in each interval (1 to 100).
    #[arg(long, default_value_t = 10, allow_negative_numbers = true,
          value_parser = lobster_fleet::flags::whole(1u32, 100, ""))]
    pub endpoints: u32,
    /// Joins started per second (the master admits 50/s after a burst of 200).
    #[arg(long, default_value_t = 50, allow_negative_numbers = true,
          value_parser = lobster_fleet::flags::whole(1u32, 10_000, ""))]
    pub joins_per_second: u32,
}

/// What the simulated slaves measured, printed as one JSON line at the end.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub slaves: u32,
    /// Slaves whose session was open at the end.
    pub sessions_open: u32,
    /// Seconds from the first join to the last accepted one.
    pub joined_in_s: f64,
    /// Slaves that received an assignment.
    pub assigned: u32,
    /// Seconds from the first assignment any simulated slave received to the last.
    pub assignment_spread_s: f64,
    /// When the last simulated slave received its assignment (Unix time, milliseconds; 0 when
    /// none did), to time a run's start from outside.
    pub last_assigned_unix_ms: u64,
    /// Intervals sent and acknowledged.
    pub intervals_sent: u64,
    pub intervals_acked: u64,
    /// Round trip from sending an interval to its acknowledgement, milliseconds.
    pub ack_rtt_ms_p50: f64,
    pub ack_rtt_ms_p99: f64,
    pub ack_rtt_ms_max: f64,
    /// Sessions the master ended or that failed, with the first reason.
    pub sessions_lost: u32,
    pub first_error: Option<String>,
}

#[derive(Default)]
struct Shared {
    joined: Vec<Instant>,
    assigned: Vec<Instant>,
    last_assigned: Option<std::time::SystemTime>,
    rtt: Option<hdrhistogram::Histogram<u64>>,
    sent: u64,
    acked: u64,
    open: u32,
    lost: u32,
    first_error: Option<String>,
}

/// Runs `args.count` simulated slaves until `shutdown`, then returns what they measured.
pub async fn run(cfg: AgentConfig, args: SimulateArgs, shutdown: CancellationToken) -> Summary {
    let shared = Arc::new(Mutex::new(Shared {
        rtt: hdrhistogram::Histogram::new_with_bounds(1, 600_000_000, 3).ok(),
        ..Default::default()
    }));
    let cfg = Arc::new(cfg);
    let names: Vec<String> = (0..args.endpoints)
        .map(|e| format!("endpoint-{e}"))
        .collect();
    let mut rng = SmallRng::seed_from_u64(7);
    let seconds: Arc<Vec<proto::StatsInterval>> = Arc::new(
        (0..VARIANTS)
            .map(|_| interval(&names, &mut rng).to_proto("", 0, false))
            .collect(),
    );
    let mut tasks = tokio::task::JoinSet::new();
    let mut channel: Option<Channel> = None;
    let pause = Duration::from_secs(1) / args.joins_per_second;
    for i in 0..args.count as usize {
        if shutdown.is_cancelled() {
            break;
        }
        if i % PER_CHANNEL == 0 || channel.is_none() {
            match crate::tls::connect(&cfg.master, &cfg.fingerprint).await {
                Ok(c) => channel = Some(c),
                Err(e) => {
                    note_error(&shared, crate::tls::chain(&e));
                    break;
                }
            }
        }
        let ch = channel.clone().expect("connected above");
        tasks.spawn(slave(
            i as u32,
            ch,
            cfg.clone(),
            seconds.clone(),
            shared.clone(),
            shutdown.clone(),
        ));
        tokio::time::sleep(pause).await;
    }
    shutdown.cancelled().await;
    while tasks.join_next().await.is_some() {}
    let s = shared.lock().expect("no poisoned lock");
    let spread = |v: &[Instant]| match (v.iter().min(), v.iter().max()) {
        (Some(a), Some(b)) => b.duration_since(*a).as_secs_f64(),
        _ => 0.0,
    };
    let q = |p: f64| {
        s.rtt
            .as_ref()
            .map_or(0.0, |h| h.value_at_quantile(p) as f64 / 1000.0)
    };
    Summary {
        slaves: args.count,
        sessions_open: s.open,
        joined_in_s: spread(&s.joined),
        assigned: s.assigned.len() as u32,
        assignment_spread_s: spread(&s.assigned),
        last_assigned_unix_ms: s.last_assigned.map_or(0, |t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        }),
        intervals_sent: s.sent,
        intervals_acked: s.acked,
        ack_rtt_ms_p50: q(0.5),
        ack_rtt_ms_p99: q(0.99),
        ack_rtt_ms_max: s.rtt.as_ref().map_or(0.0, |h| h.max() as f64 / 1000.0),
        sessions_lost: s.lost,
        first_error: s.first_error.clone(),
    }
}

fn note_error(shared: &Mutex<Shared>, e: String) {
    let mut s = shared.lock().expect("no poisoned lock");
    s.lost += 1;
    s.first_error.get_or_insert(e);
}

/// One simulated slave's share of a run: when interval 0 began on this host's clock.
struct Share {
    run_id: String,
    origin: Instant,
    next_index: u64,
}

async fn slave(
    n: u32,
    channel: Channel,
    cfg: Arc<AgentConfig>,
    seconds: Arc<Vec<proto::StatsInterval>>,
    shared: Arc<Mutex<Shared>>,
    shutdown: CancellationToken,
) {
    if let Err(e) = session(n, channel, &cfg, &seconds, &shared, &shutdown).await {
        note_error(&shared, e);
    }
}

#[allow(clippy::too_many_arguments)]
async fn session(
    n: u32,
    channel: Channel,
    cfg: &AgentConfig,
    seconds: &[proto::StatsInterval],
    shared: &Mutex<Shared>,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let mut client = ControlClient::new(channel);
    let uid = format!("sim-{n}-{:016x}", rand::random::<u64>());
    let id = &cfg.identity;
    let reply = client
        .join(proto::JoinRequest {
            join_token: cfg.join_token.clone(),
            instance_id: format!("{}-{}", id.instance_id, n / 2),
            host: id.host.clone(),
            cores: 2,
            slave_index: n % 2 + 1,
            version: lobster_fleet::VERSION.to_string(),
            boot_id: id.boot_id.clone(),
            slave_uid: uid.clone(),
            millicores: 1000,
            instance_type: "simulated".into(),
            region: id.region.clone(),
            slaves_on_host: 2,
            expires_at: String::new(),
        })
        .await
        .map_err(|s| format!("join refused: {:?}: {}", s.code(), s.message()))?
        .into_inner();
    shared.lock().expect("lock").joined.push(Instant::now());
    let (tx, rx) = mpsc::channel::<SlaveMessage>(64);
    let _ = tx.try_send(SlaveMessage {
        kind: Some(Up::Attach(proto::Attach {
            slave_uid: uid,
            session_secret: reply.session_secret,
            run_id: String::new(),
        })),
    });
    let mut inbound = client
        .session(ReceiverStream::new(rx))
        .await
        .map_err(|s| format!("session refused: {:?}: {}", s.code(), s.message()))?
        .into_inner();
    shared.lock().expect("lock").open += 1;
    let mut turn = n as usize;
    let mut heartbeat = tokio::time::interval(Duration::from_millis(u64::from(
        reply.heartbeat_ms.clamp(100, 60_000),
    )));
    let mut share: Option<Share> = None;
    let mut unacked: HashMap<u64, Instant> = HashMap::new();
    let result = loop {
        let next_interval = share
            .as_ref()
            .map(|s| s.origin + Duration::from_secs(s.next_index + 1));
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            _ = heartbeat.tick() => {
                let msg = SlaveMessage { kind: Some(Up::Heartbeat(beat(share.as_ref()))) };
                if tx.send(msg).await.is_err() { break Err("session closed".to_string()); }
            }
            _ = async { tokio::time::sleep_until(next_interval.expect("guarded").into()).await }, if next_interval.is_some() => {
                let s = share.as_mut().expect("guarded");
                // A pre-made second (the master's work per interval does not depend on the
                // values), so that one core can simulate thousands of slaves.
                turn += 1;
                let mut msg = seconds[turn % seconds.len()].clone();
                msg.run_id.clone_from(&s.run_id);
                msg.index = s.next_index;
                // As the agent does: the interval carries the heartbeat, and the next of its
                // own is put off (`lobster_fleet::liveness`).
                msg.heartbeat = Some(beat(Some(&*s)));
                let put_off = heartbeat.period() * 5 / 4;
                heartbeat.reset_after(put_off);
                unacked.insert(s.next_index, Instant::now());
                s.next_index += 1;
                shared.lock().expect("lock").sent += 1;
                if tx.send(SlaveMessage { kind: Some(Up::Stats(msg)) }).await.is_err() {
                    break Err("session closed".to_string());
                }
            }
            m = inbound.message() => {
                let m = match m {
                    Ok(Some(m)) => m,
                    Ok(None) => break Err("the master ended the session".to_string()),
                    Err(s) => break Err(format!("session failed: {:?}: {}", s.code(), s.message())),
                };
                match m.kind {
                    Some(Down::Assign(a)) => {
                        {
                            let mut s = shared.lock().expect("lock");
                            s.assigned.push(Instant::now());
                            s.last_assigned = Some(std::time::SystemTime::now());
                        }
                        let origin = Instant::now() - Duration::from_millis(a.run_elapsed_ms);
                        share = Some(Share {
                            next_index: origin.elapsed().as_secs(),
                            run_id: a.run_id,
                            origin,
                        });
                    }
                    Some(Down::Ack(a)) => {
                        let now = Instant::now();
                        let mut s = shared.lock().expect("lock");
                        for i in a.indexes {
                            if let Some(t) = unacked.remove(&i) {
                                s.acked += 1;
                                if let Some(h) = s.rtt.as_mut() {
                                    let _ = h.record(now.duration_since(t).as_micros().max(1) as u64);
                                }
                            }
                        }
                    }
                    Some(Down::Stop(stop)) => {
                        if let Some(s) = share.take().filter(|s| s.run_id == stop.run_id) {
                            let msg = IntervalStats::default().to_proto(&s.run_id, s.next_index, true);
                            unacked.insert(s.next_index, Instant::now());
                            shared.lock().expect("lock").sent += 1;
                            let _ = tx.send(SlaveMessage { kind: Some(Up::Stats(msg)) }).await;
                        }
                        let _ = tx.send(SlaveMessage { kind: Some(Up::Event(proto::Event {
                            run_id: stop.run_id,
                            kind: EventKind::Stopped as i32,
                            message: "stopped".into(),
                        }))}).await;
                    }
                    _ => {}
                }
            }
        }
    };
    shared.lock().expect("lock").open -= 1;
    result
}

/// A simulated slave's heartbeat: running its share, or idle.
fn beat(share: Option<&Share>) -> proto::Heartbeat {
    proto::Heartbeat {
        state: if share.is_some() {
            SlaveState::Running
        } else {
            SlaveState::Idle
        } as i32,
        run_id: share.map(|s| s.run_id.clone()).unwrap_or_default(),
        ..Default::default()
    }
}

/// One second of a simulated slave: each endpoint with a spread of latencies between 1 and
/// 200 ms and their phases.
fn interval(names: &[String], rng: &mut SmallRng) -> IntervalStats {
    let mut stats = IntervalStats::default();
    for name in names {
        let mut e = EndpointStats {
            requests: SAMPLES,
            bytes_received: SAMPLES * 1024,
            bytes_sent: SAMPLES * 128,
            ..Default::default()
        };
        for _ in 0..SAMPLES {
            // As a real slave records a response: its latency, and the waiting and receiving
            // phases it splits into (kept-alive connections: no connecting phase).
            let latency = rng.random_range(1_000..200_000u64);
            let receiving = rng.random_range(10..latency / 10);
            let _ = e.latency_us.record(latency);
            let _ = e.phases.waiting_us.record(latency - receiving);
            let _ = e.phases.receiving_us.record(receiving);
        }
        stats.endpoints.insert(name.clone(), e);
    }
    stats
}
