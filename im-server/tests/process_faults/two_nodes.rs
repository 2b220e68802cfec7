//! The load the service-outage scenarios share: two `im-server` processes
//! on one Redis and one PostgreSQL, four users in a group and two direct
//! chats that cross the nodes (users 0 and 1 on node 0, users 2 and 3 and
//! user 0's tablet on node 1, each device on its node's WebSocket URL), the
//! four phones sending all along; and the end every scenario checks.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use im_client::Client;
use im_protocol::{ConversationId, UserId};
use tokio::task::{JoinHandle, JoinSet};

use super::checker::{Checker, Members, Shared};
use super::harness::{
    acks_flow, device, free_addr, send_until, settled_history, stop_sending, wait_for, Api, People, SendPlan,
    ServerProcess, TOKEN_SECRET,
};
use super::{os, NO_RATE_LIMITS};

/// The direct chats: user 0 ↔ user 2 and user 1 ↔ user 3, across the nodes.
const PAIRS: [(usize, usize); 2] = [(0, 2), (1, 3)];

/// The two nodes, their users and devices, and the senders.
pub struct TwoNodes {
    /// The server processes.
    pub nodes: Vec<ServerProcess>,
    /// Their node names.
    pub names: Vec<String>,
    /// Their HTTP APIs.
    pub apis: Vec<Api>,
    /// (id, token) of user0..user3.
    pub users: Vec<(UserId, String)>,
    /// The users' ids.
    pub ids: Vec<UserId>,
    /// The group of all four.
    pub group: ConversationId,
    /// user0 ↔ user2 (across the nodes).
    pub d02: ConversationId,
    /// user1 ↔ user3 (across the nodes).
    pub d13: ConversationId,
    /// Who is in each conversation.
    pub members: Members,
    /// Every ack and delivery.
    pub checker: Shared,
    /// The devices, by index in the checker.
    pub clients: Vec<Client>,
    /// The node each device connects to, by index.
    pub node_of: Vec<usize>,
    stop: Arc<AtomicBool>,
    senders: Vec<JoinHandle<JoinSet<()>>>,
}

impl TwoNodes {
    /// Starts nodes `pf{tag}-{label}0` and `…1`, node `i` on
    /// `redis_urls[i]` and `postgres_url` (plus `extra` flags), creates the
    /// users and conversations, connects the five devices, waits until
    /// each synced, and starts the phones sending (20 ms apart, 8 in flight
    /// each).
    pub async fn start(
        tag: &str,
        label: &str,
        dir: &Path,
        logs: &Path,
        redis_urls: [&str; 2],
        postgres_url: &str,
        extra: &[&str],
    ) -> TwoNodes {
        let mut nodes = Vec::new();
        for (i, redis_url) in redis_urls.iter().enumerate() {
            let addr = free_addr();
            let name = format!("pf{tag}-{label}{i}");
            let mut args =
                os(&["--node-name", &name, "--public-ws-url", &format!("ws://{addr}/ws"), "--data-dir"]);
            args.push(dir.join(format!("n{i}")).into());
            args.extend(os(&[
                "--token-secret",
                TOKEN_SECRET,
                "--redis-url",
                redis_url,
                "--postgres-url",
                postgres_url,
            ]));
            args.extend(os(NO_RATE_LIMITS));
            args.extend(os(extra));
            nodes.push(ServerProcess::new(&name, addr, args, logs.to_path_buf()));
        }
        for n in &mut nodes {
            n.start().await;
        }
        let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
        let apis: Vec<Api> = nodes.iter().map(|n| Api::at(n.http_url())).collect();

        let people = People::create(&apis[0], 4, &PAIRS).await;
        let People { users, ids, group, directs, members } = people;
        let (d02, d13) = (directs[0], directs[1]);

        // Devices 0..4: the phones; device 4: user 0's tablet on node 1, listening only.
        let checker = Checker::shared();
        let mut clients = Vec::new();
        let mut node_of = Vec::new();
        for (i, (id, token)) in users.iter().enumerate() {
            let n = i / 2;
            clients.push(device(&checker, &format!("user{i}-phone"), *id, token, &nodes[n].ws_url()));
            node_of.push(n);
        }
        let (_, tablet_token) = apis[1].login("user0").await;
        clients.push(device(&checker, "user0-tablet", ids[0], &tablet_token, &nodes[1].ws_url()));
        node_of.push(1);
        let synced = wait_for(&checker, Instant::now() + Duration::from_secs(15), |c| {
            c.devices.iter().all(|d| !d.synced.is_empty())
        })
        .await;
        assert!(synced, "every client connects and syncs: {}", checker.lock().unwrap().summary());

        let stop = Arc::new(AtomicBool::new(false));
        let mut senders = Vec::new();
        for (i, client) in clients.iter().enumerate().take(4) {
            let direct = if i % 2 == 0 { d02 } else { d13 };
            let plan = SendPlan {
                device: i,
                convs: vec![group, direct, group],
                max: 5000,
                pace: Duration::from_millis(20),
                window: 8,
            };
            senders.push(tokio::spawn(send_until(client.clone(), checker.clone(), plan, stop.clone())));
        }
        TwoNodes {
            nodes,
            names,
            apis,
            users,
            ids,
            group,
            d02,
            d13,
            members,
            checker,
            clients,
            node_of,
            stop,
            senders,
        }
    }

    /// Connects another device of user `user` to node `node` with `token`
    /// (its index in the checker).
    pub fn add_device(&mut self, name: &str, user: usize, token: &str, node: usize) -> usize {
        let ws = self.nodes[node].ws_url();
        self.clients.push(device(&self.checker, name, self.ids[user], token, &ws));
        self.node_of.push(node);
        self.clients.len() - 1
    }

    /// Deliveries so far, per device and conversation (to slice what came when).
    pub fn lengths(&self) -> Vec<BTreeMap<ConversationId, usize>> {
        self.lengths_of(&self.checker.lock().unwrap())
    }

    /// [`lengths`](Self::lengths) from a locked checker.
    pub fn lengths_of(&self, c: &Checker) -> Vec<BTreeMap<ConversationId, usize>> {
        c.devices.iter().map(|d| d.delivered.iter().map(|(conv, v)| (*conv, v.len())).collect()).collect()
    }

    /// Deliveries to device `dev` between two [`lengths`](Self::lengths)
    /// snapshots (`None`: now) of messages whose sender's phone is on the
    /// other node.
    pub fn cross_node(
        &self,
        c: &Checker,
        dev: usize,
        from: &BTreeMap<ConversationId, usize>,
        to: Option<&BTreeMap<ConversationId, usize>>,
    ) -> usize {
        let here = self.node_of.get(dev).copied().unwrap_or(1);
        c.devices[dev]
            .delivered
            .iter()
            .map(|(conv, got)| {
                let a = from.get(conv).copied().unwrap_or(0);
                let b = to.map_or(got.len(), |m| m.get(conv).copied().unwrap_or(0)).max(a);
                got[a..b]
                    .iter()
                    .filter(|(_, sender, _)| {
                        self.ids.iter().position(|u| u == sender).map(|i| i / 2) != Some(here)
                    })
                    .count()
            })
            .sum()
    }

    /// Waits for `acks` more acknowledgements (at most 20 s), then counts
    /// the deliveries meanwhile of messages sent on the other node, and the
    /// disconnects: (cross-node deliveries, disconnects).
    pub async fn live_again(&self, acks: usize) -> (usize, usize) {
        let before = self.lengths();
        let from = Instant::now();
        acks_flow(self.checker.clone(), from, acks).await;
        let c = self.checker.lock().unwrap();
        let drops: usize =
            c.devices.iter().map(|d| d.disconnects.iter().filter(|(at, _)| *at > from).count()).sum();
        let cross = (0..before.len()).map(|dev| self.cross_node(&c, dev, &before[dev], None)).sum();
        (cross, drops)
    }

    /// Stops the senders, waits for every send to resolve and every device
    /// to catch up, reads the whole history from node `reader`, prints the
    /// figures under `label`, and asserts the clean end: 0 acknowledged
    /// messages lost, 0 duplicated, every conversation complete and in
    /// order on every device, ids gapless (a failure shows the nodes'
    /// `ERROR` lines). Then shuts the devices down and kills the nodes.
    pub async fn finish(mut self, label: &str, seed: u64, t0: Instant, reader: usize) {
        stop_sending(&self.stop, std::mem::take(&mut self.senders)).await;
        let readers = [
            (self.group, self.users[0].1.clone()),
            (self.d02, self.users[0].1.clone()),
            (self.d13, self.users[1].1.clone()),
        ];
        let (history, heads, caught_up) =
            settled_history(&self.apis[reader], &self.checker, &readers, &self.members).await;
        {
            let c = self.checker.lock().unwrap();
            let verdict = c.verify(&history, &self.members);
            let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
            for line in self.nodes.iter().flat_map(|n| {
                let mut l = n.log_lines_with(" WARN ");
                l.extend(n.log_lines_with("ERROR"));
                l
            }) {
                // The level and message, without the timestamp and the fields.
                let text = line.split_once(" WARN ").or_else(|| line.split_once("ERROR")).map_or("", |s| s.1);
                let text: Vec<&str> = text.split_whitespace().filter(|w| !w.contains('=')).collect();
                *kinds.entry(text.join(" ").chars().take(70).collect()).or_default() += 1;
            }
            println!(
                "{label}: {:.1} s, seed {seed}; {} sends by 4 devices, {} devices; heads {}",
                t0.elapsed().as_secs_f64(),
                c.sends.len(),
                c.devices.len(),
                heads.iter().map(|(c, h)| format!("{c}={h}")).collect::<Vec<_>>().join(" ")
            );
            println!("  node warnings and errors by kind: {kinds:?}");
            println!("  {}", verdict.report().replace('\n', "\n  "));
            let errors: Vec<String> =
                self.nodes.iter().flat_map(|n| n.log_lines_with("ERROR")).take(40).collect();
            c.assert_clean_end(&verdict, caught_up, &heads, seed, &errors);
        }
        for client in &self.clients {
            let _ = tokio::time::timeout(Duration::from_secs(5), client.shutdown()).await;
        }
        for n in &mut self.nodes {
            n.kill_9();
        }
    }
}
