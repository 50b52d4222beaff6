//! The gRPC layer over a real HTTP/2 connection, with a control loop that has fallen behind
//! (a command queue of one that nobody reads).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use lobster_fleet::proto::{self, control_client::ControlClient};
use tokio_stream::wrappers::TcpListenerStream;

use super::*;

/// Sessions sending on the shared connection while the control loop takes nothing.
const FLOODING: usize = 3;
/// Messages each of them sends: more than its stream's window holds.
const FLOOD: usize = 12;
/// Bytes of each of their messages (a heartbeat with a long run id).
const MESSAGE: usize = 16 * 1024;

fn message(bytes: usize) -> SlaveMessage {
    SlaveMessage {
        kind: Some(Up::Heartbeat(proto::Heartbeat {
            run_id: "r".repeat(bytes),
            ..Default::default()
        })),
    }
}

/// The service on a loopback port with a control loop this test stands in for (its commands),
/// and one HTTP/2 connection to it.
async fn serve() -> (
    tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    tonic::transport::Channel,
    mpsc::Receiver<Command>,
) {
    let (tx, commands) = mpsc::channel(1);
    let control = ControlHandle::for_tests(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        transport()
            .add_service(ControlService::server(control))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    (server, channel, commands)
}

/// Slaves whose messages wait for the control loop must not make the other slaves sharing
/// their HTTP/2 connection silent: the connection's window holds every stream's, so a slave
/// that sends is heard (its reader holds its message for the loop) however much the others
/// have in flight. With a window of two streams', three waiting sessions stalled the whole
/// connection and the fourth slave's message never reached its reader: its lease ran out
/// while it was sending (whole connections of a 10,000-slave bench were cut off so).
#[tokio::test]
async fn a_slave_is_heard_while_others_on_its_connection_wait_for_a_control_loop_behind() {
    // One connection: every session below is a stream of it.
    let (server, channel, mut commands) = serve().await;

    // FLOODING sessions and one more (the last), each attached by this test standing in for
    // the control loop.
    let mut senders = Vec::new();
    let mut calls = Vec::new();
    for i in 0..=FLOODING {
        let (up, rx) = mpsc::channel::<SlaveMessage>(1);
        up.send(SlaveMessage {
            kind: Some(Up::Attach(proto::Attach {
                slave_uid: format!("u{i}"),
                session_secret: "s".into(),
                run_id: String::new(),
            })),
        })
        .await
        .unwrap();
        let mut client = ControlClient::new(channel.clone());
        calls.push(tokio::spawn(async move {
            client
                .session(ReceiverStream::new(rx))
                .await
                .map(|r| r.into_inner())
        }));
        senders.push(up);
    }
    let mut pulses = std::collections::HashMap::new();
    let mut downs = Vec::new();
    while pulses.len() <= FLOODING {
        match commands.recv().await.expect("the server holds the handle") {
            Command::Attach {
                attach,
                tx,
                pulse,
                reply,
            } => {
                let session = pulses.len() as u64;
                pulses.insert(attach.slave_uid, pulse);
                downs.push(tx);
                reply.send(Ok(session)).unwrap();
            }
            _ => panic!("only attaches come before the sessions send"),
        }
    }
    let mut inbound = Vec::new();
    for call in calls {
        inbound.push(call.await.unwrap().expect("session accepted"));
    }

    // From here the control loop takes nothing. The flooding sessions send more than their
    // streams' windows; their readers wait for the loop with a message each.
    let sent = std::sync::Arc::new(AtomicUsize::new(0));
    let last = senders.pop().unwrap();
    for up in senders {
        let sent = sent.clone();
        tokio::spawn(async move {
            for _ in 0..FLOOD {
                if up.send(message(MESSAGE)).await.is_err() {
                    return;
                }
                sent.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    // Until they can send no more: a second without progress (or all sent).
    let mut seen = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = sent.load(Ordering::SeqCst);
        if now == seen || now == FLOODING * FLOOD {
            break;
        }
        seen = now;
    }
    assert!(
        seen >= FLOODING * 2,
        "the flooding sessions sent something: {seen}"
    );

    // The last slave sends one small message: its reader hears it.
    let listening = &pulses[&format!("u{FLOODING}")];
    assert!(listening.silence(Instant::now()) > Duration::ZERO);
    last.send(message(100)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while listening.silence(Instant::now()) > Duration::ZERO {
        assert!(
            Instant::now() < deadline,
            "the slave's message never reached its reader: the connection is stalled by the \
             other sessions' unread messages"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop((inbound, downs, commands));
    server.abort();
}

/// An `Assign` that waited in its session's queue (one slicing queues thousands, written as
/// their connections get to them) reaches the slave with the run's clocks of the moment it
/// is written: the slave starts its seconds from them, and an `Assign` written 0.7 s after
/// it was made ended that slave's every second 0.7 s late, which every merged second waited
/// for.
#[tokio::test]
async fn an_assignment_that_waited_in_its_queue_carries_the_run_clocks_of_when_it_is_written() {
    let (server, channel, mut commands) = serve().await;
    let (up, rx) = mpsc::channel::<SlaveMessage>(1);
    up.send(SlaveMessage {
        kind: Some(Up::Attach(proto::Attach {
            slave_uid: "u".into(),
            session_secret: "s".into(),
            run_id: String::new(),
        })),
    })
    .await
    .unwrap();
    let mut client = ControlClient::new(channel);
    let call = tokio::spawn(async move { client.session(ReceiverStream::new(rx)).await });
    let down = match commands.recv().await.expect("the server holds the handle") {
        Command::Attach { tx, reply, .. } => {
            reply.send(Ok(0)).unwrap();
            tx
        }
        _ => panic!("the session attaches first"),
    };
    let mut inbound = call.await.unwrap().expect("session accepted").into_inner();

    // Made (its clocks read) 700 ms ago, written now.
    let waited = Duration::from_millis(700);
    let made = Instant::now() - waited;
    down.send(Ok(Queued {
        msg: proto::MasterMessage {
            kind: Some(proto::master_message::Kind::Assign(proto::Assign {
                run_id: "r".into(),
                run_elapsed_ms: 5_000,
                load_elapsed_ms: 4_000,
                ..Default::default()
            })),
        },
        at: made,
    }))
    .await
    .unwrap();
    let got = inbound.message().await.unwrap().expect("the assignment");
    let written = made.elapsed().as_millis() as u64;
    let Some(proto::master_message::Kind::Assign(a)) = got.kind else {
        panic!("not an assignment: {got:?}");
    };
    // Its clocks advanced by its wait: at least 700 ms, at most until it was read here.
    assert!(
        (5_700..=5_000 + written).contains(&a.run_elapsed_ms),
        "run clock {} ms, written {written} ms after it was made",
        a.run_elapsed_ms
    );
    assert_eq!(a.run_elapsed_ms - 5_000, a.load_elapsed_ms - 4_000);
    drop((up, down, commands));
    server.abort();
}
