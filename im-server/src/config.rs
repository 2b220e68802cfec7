//! Server configuration with sane defaults: `ServerConfig::default()` runs.

use std::time::Duration;

use im_protocol::WireLimits;

/// Everything that tunes a server. Start from [`ServerConfig::default`] and
/// change fields; new fields arrive with defaults, so this struct is
/// `#[non_exhaustive]`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// This node's name, shown in `hello` and logs.
    pub node_name: String,
    /// The WebSocket URL clients should use to reach this node (answered by
    /// the dispatcher). `None`: derived from the request's `Host` header.
    pub public_ws_url: Option<String>,
    /// How often clients should ping, and how often the server sends
    /// WebSocket pings.
    pub heartbeat_interval: Duration,
    /// A connection that sends nothing (frames, pings or pongs) for this long
    /// is closed with 3002.
    pub idle_timeout: Duration,
    /// How long a user with no connection stays "online" before going
    /// offline, so a reconnect does not flap presence.
    pub presence_grace: Duration,
    /// How long a shared presence store (Redis) counts a connection as live
    /// without a refresh: a dead node's users go offline this long (plus the
    /// grace period) after it died.
    pub presence_conn_ttl: Duration,
    /// How often this node refreshes its connections in a shared presence
    /// store (which expires connections of dead nodes); must stay well below
    /// that store's connection TTL (60 s for Redis).
    pub presence_refresh: Duration,
    /// Frames queued per connection before it counts as a slow reader and is
    /// closed with 3001.
    pub send_queue: usize,
    /// Bytes queued per connection before it counts as a slow reader (a few
    /// large sync pages must not pin unbounded memory).
    pub send_queue_bytes: usize,
    /// Protocol limits announced in `hello` and enforced.
    pub limits: WireLimits,
    /// Most members a group may have (LINE caps at 500).
    pub max_group_members: usize,
    /// Groups with at most this many members get `receipt` pushes live;
    /// larger ones answer only the `receipts` query (a receipt fans out to
    /// every member: 100 members reading at once is ~10,000 frames/s).
    pub receipts_live_max_members: usize,
    /// Lifetime of a login token.
    pub token_ttl: Duration,
    /// Origins allowed to open a WebSocket (`None`: any). Requests without an
    /// `Origin` header (non-browser clients) are always allowed.
    pub allowed_origins: Option<Vec<String>>,
    /// Most concurrent WebSocket connections; more are refused with 503.
    pub max_connections: usize,
    /// Most open TCP connections (HTTP and WebSocket) from one client
    /// address, an IPv6 /64 counting as one; more are closed on arrival.
    /// 0: no cap. Behind a reverse proxy every client has the proxy's
    /// address: raise it or set 0 there, and cap per client at the proxy.
    pub max_connections_per_ip: usize,
    /// Longest time a client may take to send a request's head (request
    /// line and headers), also the WebSocket handshake; a slower one is
    /// disconnected (slowloris). It also closes an idle keep-alive
    /// connection that does not start its next request within it.
    pub header_read_timeout: Duration,
    /// With several nodes, how long a message that arrives ahead of its
    /// conversation's next id is held for the missing ones
    /// ([`Reorder`](crate::reorder::Reorder)); zero: no reordering.
    pub reorder_window: Duration,
    /// Push notifications in flight at once; more are dropped and counted.
    pub push_max_in_flight: usize,
    /// At shutdown, how long to wait for connections to close.
    pub shutdown_timeout: Duration,
    /// How long this node's registry entry lives without being refreshed;
    /// it is refreshed every third of this.
    pub registry_ttl: Duration,
    /// When draining, connections are closed (3501) spread evenly over this
    /// window, so other nodes are not hit by every client at once.
    pub drain_window: Duration,
    /// Key prefix in Redis (several deployments can share one Redis).
    pub redis_prefix: String,
    /// Bearer token that authorizes the admin endpoints (`POST
    /// /admin/drain`). `None` disables them.
    pub admin_token: Option<String>,
    /// Largest attachment upload, in bytes; larger ones answer 413
    /// `body_too_large` and leave nothing behind.
    pub max_attachment_bytes: u64,
    /// MIME types an upload may have (`type/subtype` or `type/*`); others
    /// answer 415 `unsupported_media_type`.
    pub attachment_types: Vec<String>,
    /// An upload that no message references within this time is removed.
    pub attachment_orphan_ttl: Duration,
    /// API keys of the server API (`/api/v1/server/…`, the application's
    /// backend). Empty (the default): the server API is off (404).
    pub server_api_keys: Vec<String>,
    /// Whether reactions, edits and recalls are pushed to offline
    /// recipients like messages (default `false`: they update what a
    /// device shows once it syncs, and are never pushed). System notices
    /// are never pushed.
    pub push_events: bool,
    /// Whether group membership changes and renames are posted as `system`
    /// notices in the group's sequence (default `true`).
    pub system_notices: bool,
    /// Whether a direct message or contact request refused because of a
    /// block says so (`forbidden` "… has blocked you"); default `false`:
    /// the refusal is a plain `forbidden` "cannot message this user", the
    /// same whoever blocked whom.
    pub reveal_blocks: bool,
    /// Messages per second one user may send over all their connections
    /// on a node (0: no per-user limit), on top of each connection's
    /// `limits.rate_per_sec` frames; default 100.
    pub user_rate_per_sec: u32,
    /// The per-user burst; default 400.
    pub user_rate_burst: u32,
}

/// The MIME types allowed for uploads by default: media, PDF, plain text,
/// ZIP and opaque binary files. HTML and scripts are not among them (and
/// anything not safe to show inline is served as a download anyway).
pub const DEFAULT_ATTACHMENT_TYPES: &[&str] = &[
    "image/*",
    "audio/*",
    "video/*",
    "text/plain",
    "application/pdf",
    "application/zip",
    "application/octet-stream",
];

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            node_name: "im-1".into(),
            public_ws_url: None,
            heartbeat_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(45),
            presence_grace: Duration::from_secs(10),
            presence_conn_ttl: Duration::from_secs(60),
            presence_refresh: Duration::from_secs(20),
            send_queue: 1024,
            send_queue_bytes: 8 * 1024 * 1024,
            limits: WireLimits::default(),
            max_group_members: 500,
            receipts_live_max_members: 100,
            token_ttl: Duration::from_secs(30 * 24 * 3600),
            allowed_origins: None,
            max_connections: 100_000,
            max_connections_per_ip: 1_000,
            header_read_timeout: Duration::from_secs(15),
            reorder_window: Duration::from_millis(300),
            push_max_in_flight: 64,
            shutdown_timeout: Duration::from_secs(10),
            registry_ttl: Duration::from_secs(10),
            drain_window: Duration::from_secs(10),
            admin_token: None,
            redis_prefix: "im".into(),
            max_attachment_bytes: 25 * 1024 * 1024,
            attachment_types: DEFAULT_ATTACHMENT_TYPES.iter().map(|t| t.to_string()).collect(),
            attachment_orphan_ttl: Duration::from_secs(24 * 3600),
            server_api_keys: Vec::new(),
            push_events: false,
            system_notices: true,
            reveal_blocks: false,
            user_rate_per_sec: 100,
            user_rate_burst: 400,
        }
    }
}
