//! Turns a scenario into sockets to open and publishers to run: who
//! connects where, who sends what to whom, and how many stamped
//! messages each socket should receive.

use std::time::Duration;

use switchboard_common::auth::{Minter, claims};

use crate::scenario::{Dialect, Kind, Scenario};
use crate::wire;

/// One socket of the run.
#[derive(Debug, Clone)]
pub struct SocketPlan {
    /// Position in the whole run (all processes); picks process, target
    /// and source address.
    pub index: usize,
    /// Request path with its query.
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// Sent right after the upgrade; the socket is ready once the
    /// dialect's answer arrives (`wire::is_ready`).
    pub hello: Option<String>,
    /// IM: log in over HTTP first with this client name and token; the
    /// hello is then the register message.
    pub im_login: Option<(String, String)>,
    /// The socket's principal (client id, user id).
    pub me: String,
    /// Stamped messages this socket should receive in the measured phase.
    pub expect: u64,
}

/// What one publisher sends.
#[derive(Debug, Clone)]
pub enum Message {
    /// Group dialect, `target: group`.
    Group,
    /// Group dialect, `target: echo`.
    Echo,
    /// Group dialect, `target: direct` to this client.
    Direct(String),
    /// The baseline: a bare stamped frame.
    Raw,
    /// JSON-RPC `redis.publish` on this channel.
    RpcPublish(String),
    /// IM text from one user to another.
    ImText { from: String, to: String },
    /// Server API: messages to these groups in turn.
    ApiGroups(Vec<String>),
    /// Server API: IoT events of one device.
    ApiIot { product: String, device: String },
}

/// A publisher: which socket it sends on (none for the server API), what,
/// how many, how fast, and its offset so publishers do not send in step.
#[derive(Debug, Clone)]
pub struct PublisherPlan {
    /// Global index of the sending socket; `None` for the server API.
    pub socket: Option<usize>,
    pub message: Message,
    /// Where this publisher starts in the message sequence (API
    /// publishers share one sequence, each taking every `stride`-th).
    pub first: u64,
    pub stride: u64,
    pub messages: u64,
    pub rate: f64,
    pub offset: Duration,
}

/// The whole run, before it is split between processes.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub sockets: Vec<SocketPlan>,
    pub publishers: Vec<PublisherPlan>,
    /// `recovery`: sockets that drop, each with its close time from the
    /// start of the measured phase.
    pub drops: Vec<(usize, Duration)>,
}

/// Names that are unique to a run, so runs against one server never meet.
pub struct Names {
    pub run: String,
}

impl Names {
    pub fn client(&self, i: usize) -> String {
        format!("c{}_{i}", self.run)
    }
    pub fn group(&self, g: usize) -> String {
        format!("g{}_{g}", self.run)
    }
}

/// Builds the plan of a message scenario (`idle` and `connect` only use
/// its sockets).
pub fn build(scenario: &Scenario, names: &Names, minter: Option<&Minter>) -> Plan {
    let tenant = scenario.tenant.as_str();
    let token = |sub: &str, kind: &str| {
        minter
            .map(|m| m.mint(&claims(sub, kind, tenant, None, 24 * 3600)))
            .unwrap_or_default()
    };
    let planned = scenario.planned_messages();
    let rate = scenario.message.rate;
    let publishers = scenario.message.publishers;
    let dialect = scenario.dialect();
    let mut plan = Plan::default();
    let stagger = |i: usize, n: usize| Duration::from_secs_f64((i as f64 / n.max(1) as f64) / rate);

    // A socket in `group`: group dialect or the baseline's room.
    let group_socket = |index: usize, group: &str, expect: u64| {
        let me = names.client(index);
        let path = match dialect {
            Dialect::Raw => wire::raw::room_path(group),
            _ => wire::group::path(group, &me, &token(&me, "client")),
        };
        SocketPlan {
            index,
            path,
            headers: Vec::new(),
            hello: None,
            im_login: None,
            me,
            expect,
        }
    };
    let ws_message = |group_message: Message| match dialect {
        Dialect::Raw => Message::Raw,
        _ => group_message,
    };

    match scenario.kind {
        Kind::Idle | Kind::Connect => {
            for i in 0..scenario.vus {
                let group = names.group(i / scenario.group_size.max(1));
                let mut socket = group_socket(i, &group, 0);
                match dialect {
                    Dialect::Raw => socket.path = wire::raw::echo_path(),
                    Dialect::Iot => {
                        socket.path = wire::iot::path(&token(&socket.me, "user"));
                        socket.hello = Some(wire::iot::subscribe("bench", &socket.me));
                    }
                    _ => {}
                }
                plan.sockets.push(socket);
            }
        }
        Kind::Echo => {
            for i in 0..scenario.vus {
                let mut socket = group_socket(i, &names.group(i / 50), planned);
                if dialect == Dialect::Raw {
                    socket.path = wire::raw::echo_path();
                }
                plan.sockets.push(socket);
                plan.publishers.push(PublisherPlan {
                    socket: Some(i),
                    message: ws_message(Message::Echo),
                    first: 0,
                    stride: 1,
                    messages: planned,
                    rate,
                    offset: stagger(i, scenario.vus),
                });
            }
        }
        Kind::Fanout => {
            let group = names.group(0);
            let total = scenario.vus + publishers;
            for i in 0..total {
                plan.sockets
                    .push(group_socket(i, &group, planned * publishers as u64));
            }
            for p in 0..publishers {
                plan.publishers.push(PublisherPlan {
                    socket: Some(scenario.vus + p),
                    message: ws_message(Message::Group),
                    first: 0,
                    stride: 1,
                    messages: planned,
                    rate,
                    offset: stagger(p, publishers),
                });
            }
        }
        Kind::Groups => {
            for g in 0..scenario.groups {
                let group = names.group(g);
                for m in 0..scenario.group_size {
                    let index = g * scenario.group_size + m;
                    plan.sockets.push(group_socket(index, &group, planned));
                }
                plan.publishers.push(PublisherPlan {
                    socket: Some(g * scenario.group_size),
                    message: ws_message(Message::Group),
                    first: 0,
                    stride: 1,
                    messages: planned,
                    rate,
                    offset: stagger(g, scenario.groups),
                });
            }
        }
        Kind::Direct => {
            for i in 0..scenario.vus {
                plan.sockets
                    .push(group_socket(i, &names.group(i / 50), planned));
                let partner = names.client(i ^ 1);
                plan.publishers.push(PublisherPlan {
                    socket: Some(i),
                    message: Message::Direct(partner),
                    first: 0,
                    stride: 1,
                    messages: planned,
                    rate,
                    offset: stagger(i, scenario.vus),
                });
            }
        }
        Kind::ApiPublish => {
            let groups = scenario.groups.max(1);
            let names_of: Vec<String> = (0..groups).map(|g| names.group(g)).collect();
            for i in 0..scenario.vus {
                let g = i % groups;
                // Message k goes to group k % groups.
                let to_group =
                    planned / groups as u64 + u64::from((g as u64) < planned % groups as u64);
                plan.sockets.push(group_socket(i, &names_of[g], to_group));
            }
            api_publishers(&mut plan, scenario, Message::ApiGroups(names_of));
        }
        Kind::IotEvents => {
            for i in 0..scenario.vus {
                let me = names.client(i);
                plan.sockets.push(SocketPlan {
                    index: i,
                    path: wire::iot::path(&token(&me, "user")),
                    headers: Vec::new(),
                    hello: Some(wire::iot::subscribe("bench", &names.run)),
                    im_login: None,
                    me,
                    expect: planned,
                });
            }
            api_publishers(
                &mut plan,
                scenario,
                Message::ApiIot {
                    product: "bench".to_owned(),
                    device: names.run.clone(),
                },
            );
        }
        Kind::JsonrpcPubsub => {
            let app = format!("a{}", names.run);
            let channel = "bench".to_owned();
            let app_token = minter
                .map(|m| {
                    let mut c = claims(&app, "app", tenant, None, 24 * 3600);
                    c.app = Some(app.clone());
                    m.mint(&c)
                })
                .unwrap_or_default();
            let total = scenario.vus + publishers;
            for i in 0..total {
                let subscriber = i < scenario.vus;
                plan.sockets.push(SocketPlan {
                    index: i,
                    path: wire::jsonrpc::app_path(&app, &format!("t{i}"), &app_token),
                    headers: Vec::new(),
                    hello: subscriber.then(|| wire::jsonrpc::subscribe(&channel, &format!("s{i}"))),
                    im_login: None,
                    me: format!("t{i}"),
                    expect: if subscriber {
                        planned * publishers as u64
                    } else {
                        0
                    },
                });
            }
            for p in 0..publishers {
                plan.publishers.push(PublisherPlan {
                    socket: Some(scenario.vus + p),
                    message: Message::RpcPublish(channel.clone()),
                    first: 0,
                    stride: 1,
                    messages: planned,
                    rate,
                    offset: stagger(p, publishers),
                });
            }
        }
        Kind::Recovery => {
            // Subscribers first (round robin over the groups), then each
            // group's publishers; every member gets all of its group's
            // messages, a dropped one through its replay.
            let groups = scenario.groups.max(1);
            let per_group = planned * publishers as u64;
            for i in 0..scenario.vus {
                plan.sockets
                    .push(group_socket(i, &names.group(i % groups), per_group));
            }
            for g in 0..groups {
                for p in 0..publishers {
                    let index = scenario.vus + g * publishers + p;
                    plan.sockets
                        .push(group_socket(index, &names.group(g), per_group));
                    plan.publishers.push(PublisherPlan {
                        socket: Some(index),
                        message: Message::Group,
                        first: 0,
                        stride: 1,
                        messages: planned,
                        rate,
                        offset: stagger(g * publishers + p, groups * publishers),
                    });
                }
            }
            if let Some(spec) = &scenario.recovery {
                plan.drops = spec.drops(scenario.vus);
            }
        }
        Kind::ImChat => {
            for i in 0..scenario.vus {
                let me = names.client(i);
                let user_token = token(&me, "user");
                plan.sockets.push(SocketPlan {
                    index: i,
                    path: wire::im::socket_path(),
                    headers: Vec::new(),
                    hello: None,
                    im_login: Some((format!("web{i}"), user_token)),
                    me: me.clone(),
                    expect: planned,
                });
                plan.publishers.push(PublisherPlan {
                    socket: Some(i),
                    message: Message::ImText {
                        from: me,
                        to: names.client(i ^ 1),
                    },
                    first: 0,
                    stride: 1,
                    messages: planned,
                    rate,
                    offset: stagger(i, scenario.vus),
                });
            }
        }
    }
    plan
}

/// `message.publishers` HTTP connections sharing `message.rate` in total.
fn api_publishers(plan: &mut Plan, scenario: &Scenario, message: Message) {
    let planned = scenario.planned_messages();
    let n = scenario.message.publishers as u64;
    for p in 0..n {
        let mine = planned / n + u64::from(p < planned % n);
        plan.publishers.push(PublisherPlan {
            socket: None,
            message: message.clone(),
            first: p,
            stride: n,
            messages: mine,
            rate: scenario.message.rate / n as f64,
            offset: Duration::from_secs_f64(p as f64 / scenario.message.rate),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(text: &str) -> Scenario {
        Scenario::parse("t", &format!("name='t'\n{text}")).unwrap()
    }

    fn names() -> Names {
        Names { run: "r1".into() }
    }

    fn expected(plan: &Plan) -> u64 {
        plan.sockets.iter().map(|s| s.expect).sum()
    }

    #[test]
    fn fanout_counts_every_member_including_publishers() {
        let s = scenario("kind='fanout'\nvus=10\nduration='2s'\n[message]\nrate=5\npublishers=2\n");
        let plan = build(&s, &names(), Some(&Minter::hs256(b"k")));
        assert_eq!(plan.sockets.len(), 12);
        assert_eq!(plan.publishers.len(), 2);
        // 2 publishers x 10 messages reach all 12 members.
        assert_eq!(expected(&plan), 12 * 20);
        assert!(
            plan.sockets[0]
                .path
                .starts_with("/v3/ws/group/gr1_0/client/cr1_0?token=ey")
        );
        assert_eq!(plan.publishers[1].socket, Some(11));
    }

    #[test]
    fn raw_dialect_uses_the_baseline_rooms() {
        let s = scenario("kind='fanout'\ndialect='raw'\nvus=3\n");
        let plan = build(&s, &names(), None);
        assert_eq!(plan.sockets[0].path, "/broadcast/gr1_0");
        assert!(matches!(plan.publishers[0].message, Message::Raw));
        let echo = build(
            &scenario("kind='echo'\ndialect='raw'\nvus=2\n"),
            &names(),
            None,
        );
        assert_eq!(echo.sockets[1].path, "/echo");
    }

    #[test]
    fn groups_and_pairs() {
        let s =
            scenario("kind='groups'\ngroups=3\ngroup_size=4\nduration='1s'\n[message]\nrate=10\n");
        let plan = build(&s, &names(), None);
        assert_eq!(plan.sockets.len(), 12);
        assert_eq!(
            plan.publishers.iter().map(|p| p.socket).collect::<Vec<_>>(),
            [Some(0), Some(4), Some(8)]
        );
        assert_eq!(expected(&plan), 12 * 10);
        let d = build(&scenario("kind='direct'\nvus=4\n"), &names(), None);
        let Message::Direct(to) = &d.publishers[2].message else {
            panic!()
        };
        assert_eq!(to, "cr1_3");
    }

    #[test]
    fn api_publishers_share_the_rate_and_the_groups() {
        let s = scenario(
            "kind='api_publish'\nvus=6\ngroups=3\nduration='1s'\n[message]\nrate=10\npublishers=4\n",
        );
        let plan = build(&s, &names(), None);
        let messages: Vec<u64> = plan.publishers.iter().map(|p| p.messages).collect();
        assert_eq!(messages, [3, 3, 2, 2]);
        assert!(
            plan.publishers
                .iter()
                .all(|p| p.socket.is_none() && p.stride == 4)
        );
        // 10 messages over 3 groups of 2: 4 + 3 + 3 messages, each to 2 sockets.
        assert_eq!(expected(&plan), 20);
    }

    #[test]
    fn recovery_drops_subscribers_only_and_expects_everything_for_them() {
        let s = scenario(
            "kind='recovery'\nvus=6\ngroups=2\nduration='4s'\n[message]\nrate=5\npublishers=2\n[recovery]\ndrop=3\nat='1s'\naway='1s'\n",
        );
        let plan = build(&s, &names(), None);
        assert_eq!(plan.sockets.len(), 10);
        assert_eq!(
            plan.publishers.iter().map(|p| p.socket).collect::<Vec<_>>(),
            [Some(6), Some(7), Some(8), Some(9)]
        );
        assert!(plan.sockets[1].path.starts_with("/v3/ws/group/gr1_1/"));
        assert!(plan.sockets[8].path.starts_with("/v3/ws/group/gr1_1/"));
        // 2 publishers x 20 messages reach each of the 10 members.
        assert_eq!(expected(&plan), 10 * 40);
        let dropped: Vec<usize> = plan.drops.iter().map(|d| d.0).collect();
        assert_eq!(dropped, [0, 2, 4]);
        assert!(dropped.iter().all(|&d| d < s.vus), "publishers never drop");
    }

    #[test]
    fn jsonrpc_and_im_sockets() {
        let minter = Minter::hs256(b"k");
        let s = scenario("kind='jsonrpc_pubsub'\nvus=2\n[message]\npublishers=1\n");
        let plan = build(&s, &names(), Some(&minter));
        assert!(plan.sockets[0].path.starts_with("/v3/wss/ar1/t0?token="));
        assert!(
            plan.sockets[0]
                .hello
                .as_deref()
                .unwrap()
                .contains("subscribe")
        );
        assert!(plan.sockets[2].hello.is_none());
        assert_eq!(plan.sockets[2].expect, 0);
        let im = build(
            &scenario("kind='im_chat'\nvus=2\n"),
            &names(),
            Some(&minter),
        );
        assert_eq!(im.sockets[0].path, "/websocket");
        assert_eq!(im.sockets[1].im_login.as_ref().unwrap().0, "web1");
        let Message::ImText { from, to } = &im.publishers[1].message else {
            panic!()
        };
        assert_eq!((from.as_str(), to.as_str()), ("cr1_1", "cr1_0"));
    }
}
