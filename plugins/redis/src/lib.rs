//! The Redis plane: one ACL user per tenant-environment, confined to its own keys and channels.
//!
//! * every profile: a user `<tenant>_<env>` allowed only keys `<tenant>:<env>:*` and pub/sub
//!   channels `<tenant>:<env>:*`, with the data commands of [`COMMANDS`] and nothing that
//!   reaches beyond its keys (no `FLUSHALL`, `KEYS`, `SCAN`, `PUBSUB CHANNELS`, admin);
//! * `mt-standard` tenants live on the region's shared Redis (`targets.redis`); `st-dedicated`
//!   and `hybrid` tenants on the target's `dedicated-target` when it names one;
//! * Suspended and Archived users are `off` and their connections are closed; a confirmed
//!   deletion removes the user (Redis closes its connections). Draft tenants get nothing.
//!
//! Passwords are not Tenancy's: a new user has none (nobody can log in as it) until the
//! platform's credential flow sets one; `apply` keeps passwords, except that a user found
//! with `nopass` loses it and every password (drift that opened it to anyone).
//!
//! Observation is two commands per target however many tenants: `ACL LIST` (every user) and
//! `COMMAND` (which commands each ACL category holds, so a user's rules are compared by what
//! they allow, not by how this Redis version happens to print them).

use redis::Value;
use redis::aio::MultiplexedConnection;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;
use tenancy_plane::{
    Change, FieldChange, Lifecycle, Op, Plane, PlaneError, PlaneFuture, Profile, TenantEnv,
};
use tokio::sync::Mutex;

const PLANE: &str = "redis";

/// The command rules of every tenant user, applied in order (Redis semantics: later rules
/// override earlier ones). Data commands by category, then everything that could see or touch
/// another tenant's data taken away again.
pub const COMMANDS: &str = "-@all +@read +@write +@keyspace +@string +@hash +@list +@set \
    +@sortedset +@stream +@bitmap +@hyperloglog +@geo +@pubsub +@transaction +@connection \
    -@dangerous -@admin -scan -randomkey -dbsize -pubsub";

/// One Redis server, by logical target name (platform/regions.yaml).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RedisTarget {
    /// `redis://user:password@host:port` of a user allowed `ACL` and `CLIENT KILL`.
    pub url: String,
    /// Where `st-dedicated` and `hybrid` tenants of this target's regions live (another
    /// target of this section); on this one when absent.
    #[serde(default)]
    pub dedicated_target: Option<String>,
}

/// The `[redis]` section of `tenancy.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RedisConfig {
    #[serde(default)]
    pub targets: BTreeMap<String, RedisTarget>,
    /// Seconds one connection attempt or command may take (default 10).
    pub timeout_seconds: Option<u64>,
}

impl RedisConfig {
    fn check(&self) -> Result<(), String> {
        for (name, t) in &self.targets {
            redis::Client::open(t.url.as_str()).map_err(|e| format!("targets.{name}.url: {e}"))?;
            if let Some(d) = &t.dedicated_target
                && !self.targets.contains_key(d)
            {
                return Err(format!(
                    "targets.{name}.dedicated-target: `{d}` is not a target of [redis]"
                ));
            }
        }
        Ok(())
    }
}

/// Registers the Redis plane (`[redis]`, a region's `targets.redis`). Regions may leave it
/// out: their tenants simply have no Redis user.
pub struct Factory;

impl tenancy_plane::PlaneFactory for Factory {
    fn about(&self) -> tenancy_plane::About {
        tenancy_plane::About::new(PLANE, "redis", "Redis", "ACL users")
    }
    fn build(&self, section: &serde_json::Value) -> Result<Box<dyn Plane>, String> {
        let config: RedisConfig = tenancy_plane::factory::section(section)?;
        config.check()?;
        Ok(Box::new(RedisPlane::new(config)))
    }
}

pub struct RedisPlane {
    config: RedisConfig,
    connections: Mutex<HashMap<String, MultiplexedConnection>>,
}

/// A user as `ACL LIST` shows it, in the parts Tenancy manages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct User {
    on: bool,
    nopass: bool,
    keys: BTreeSet<String>,
    channels: BTreeSet<String>,
    /// The command rules, in order.
    commands: Vec<String>,
    /// Extra selectors (`(…)`): each grants more, so any is drift.
    selectors: usize,
}

impl User {
    /// Parse one `ACL LIST` line: `user <name> <rule> <rule> …`.
    fn parse(line: &str) -> Option<(String, User)> {
        let mut words = line.split(' ');
        if words.next()? != "user" {
            return None;
        }
        let name = words.next()?.to_owned();
        let mut u = User::default();
        let mut depth = 0usize;
        for w in words {
            if depth > 0 || w.starts_with('(') {
                if w.starts_with('(') && depth == 0 {
                    u.selectors += 1;
                }
                depth += w.matches('(').count();
                depth = depth.saturating_sub(w.matches(')').count());
                continue;
            }
            match w {
                "on" => u.on = true,
                "off" => u.on = false,
                "nopass" => u.nopass = true,
                "allkeys" => {
                    u.keys.insert("~*".into());
                }
                "allchannels" => {
                    u.channels.insert("&*".into());
                }
                "resetchannels" | "sanitize-payload" | "skip-sanitize-payload" => {}
                _ if w.starts_with('~') || w.starts_with('%') => {
                    u.keys.insert(w.to_owned());
                }
                _ if w.starts_with('&') => {
                    u.channels.insert(w.to_owned());
                }
                _ if w.starts_with('+') || w.starts_with('-') => u.commands.push(w.to_owned()),
                "allcommands" => u.commands.push("+@all".into()),
                "nocommands" => u.commands.push("-@all".into()),
                // Password hashes (`#…`) and anything else are not Tenancy's.
                _ => {}
            }
        }
        Some((name, u))
    }
}

/// Which ACL categories every command and subcommand belongs to (from `COMMAND`).
#[derive(Debug, Default)]
struct CommandTable {
    /// `get`, `client|list`, … → `read`, `fast`, …
    categories: BTreeMap<String, BTreeSet<String>>,
}

impl CommandTable {
    fn from_reply(reply: &Value) -> CommandTable {
        fn text(v: &Value) -> Option<String> {
            match v {
                Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
                Value::SimpleString(s) => Some(s.clone()),
                Value::VerbatimString { text, .. } => Some(text.clone()),
                _ => None,
            }
        }
        fn items(v: &Value) -> &[Value] {
            match v {
                Value::Array(a) | Value::Set(a) => a,
                _ => &[],
            }
        }
        fn add(table: &mut CommandTable, entry: &Value) {
            let fields = items(entry);
            let Some(name) = fields.first().and_then(text) else {
                return;
            };
            let categories = fields
                .get(6)
                .map(items)
                .unwrap_or_default()
                .iter()
                .filter_map(text)
                .map(|c| c.trim_start_matches('@').to_ascii_lowercase())
                .collect();
            table
                .categories
                .insert(name.to_ascii_lowercase(), categories);
            for sub in fields.get(9).map(items).unwrap_or_default() {
                add(table, sub);
            }
        }
        let mut table = CommandTable::default();
        for entry in items(reply) {
            add(&mut table, entry);
        }
        table
    }

    /// Every command and subcommand `rules` allow, applied in order as Redis does.
    fn allowed(&self, rules: &[String]) -> BTreeSet<&str> {
        let mut allowed: BTreeSet<&str> = BTreeSet::new();
        for rule in rules {
            let (grant, what) = rule.split_at(1);
            let grant = grant == "+";
            let hits: Vec<&str> = match what.strip_prefix('@') {
                Some("all") => self.categories.keys().map(String::as_str).collect(),
                Some(category) => self
                    .categories
                    .iter()
                    .filter(|(_, c)| c.contains(category))
                    .map(|(name, _)| name.as_str())
                    .collect(),
                // `cmd` covers its subcommands; `cmd|sub` only that one.
                None => self
                    .categories
                    .keys()
                    .filter(|name| {
                        *name == what
                            || (!what.contains('|')
                                && name.strip_prefix(what).is_some_and(|r| r.starts_with('|')))
                    })
                    .map(String::as_str)
                    .collect(),
            };
            for name in hits {
                if grant {
                    allowed.insert(name);
                } else {
                    allowed.remove(name);
                }
            }
        }
        allowed
    }
}

fn unavailable(target: &str, e: impl std::fmt::Display) -> PlaneError {
    PlaneError::Unavailable {
        plane: PLANE,
        message: format!("target `{target}`: {e}"),
    }
}

/// `<tenant>:<env>:*`: the keys and channels of a tenant-environment. Ids are `[a-z0-9_]`,
/// so no glob character (`*?[]\`) can widen the pattern.
fn pattern(d: &TenantEnv) -> String {
    format!("{}:{}:*", d.tenant, d.environment)
}

fn rules() -> Vec<String> {
    COMMANDS.split_whitespace().map(str::to_owned).collect()
}

impl RedisPlane {
    pub fn new(config: RedisConfig) -> Self {
        RedisPlane {
            config,
            connections: Mutex::new(HashMap::new()),
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.config.timeout_seconds.unwrap_or(10))
    }

    /// The target serving `d`: the region's, or its dedicated one for dedicated profiles.
    fn target_of<'a>(&'a self, d: &'a TenantEnv) -> Result<&'a str, PlaneError> {
        let t = self
            .config
            .targets
            .get(&d.placement.target)
            .ok_or_else(|| PlaneError::unknown_target(PLANE, &d.placement.target))?;
        Ok(match (&t.dedicated_target, d.profile) {
            (Some(dedicated), Profile::StDedicated | Profile::Hybrid) => dedicated,
            _ => &d.placement.target,
        })
    }

    async fn connection(&self, target: &str) -> Result<MultiplexedConnection, PlaneError> {
        let mut connections = self.connections.lock().await;
        if let Some(c) = connections.get(target) {
            return Ok(c.clone());
        }
        let t = self
            .config
            .targets
            .get(target)
            .ok_or_else(|| PlaneError::unknown_target(PLANE, target))?;
        let client = redis::Client::open(t.url.as_str()).map_err(|e| unavailable(target, e))?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout()))
            .set_response_timeout(Some(self.timeout()));
        let c = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| unavailable(target, e))?;
        connections.insert(target.to_owned(), c.clone());
        Ok(c)
    }

    async fn observe(
        &self,
        target: &str,
    ) -> Result<(HashMap<String, User>, CommandTable), PlaneError> {
        let mut c = self.connection(target).await?;
        let (lines, commands): (Vec<String>, Value) = redis::pipe()
            .cmd("ACL")
            .arg("LIST")
            .cmd("COMMAND")
            .query_async(&mut c)
            .await
            .map_err(|e| unavailable(target, e))?;
        let users = lines.iter().filter_map(|l| User::parse(l)).collect();
        Ok((users, CommandTable::from_reply(&commands)))
    }

    async fn plan_async(&self, desired: &[TenantEnv]) -> Result<Vec<Change>, PlaneError> {
        let mut by_target: BTreeMap<&str, Vec<&TenantEnv>> = BTreeMap::new();
        for d in desired.iter().filter(|d| d.lifecycle != Lifecycle::Draft) {
            by_target.entry(self.target_of(d)?).or_default().push(d);
        }
        let wanted = rules();
        let mut changes = Vec::new();
        for (target, envs) in by_target {
            let (users, table) = self.observe(target).await?;
            let wanted_commands = table.allowed(&wanted);
            for d in envs {
                let name = d.qualified_name();
                let resource = format!("user {name} on {target}");
                let observed = users.get(&name);
                if d.lifecycle == Lifecycle::Deleted {
                    if observed.is_some() {
                        changes.push(Change::new(PLANE, d, resource, Op::Delete, Vec::new()));
                    }
                    continue;
                }
                let want = User {
                    on: d.lifecycle == Lifecycle::Active,
                    nopass: false,
                    keys: BTreeSet::from([format!("~{}", pattern(d))]),
                    channels: BTreeSet::from([format!("&{}", pattern(d))]),
                    commands: wanted.clone(),
                    selectors: 0,
                };
                let state = |u: &User| Some(if u.on { "on" } else { "off" }.to_owned());
                let join =
                    |s: &BTreeSet<String>| Some(s.iter().cloned().collect::<Vec<_>>().join(" "));
                let Some(have) = observed else {
                    let fields = vec![
                        FieldChange::new("state", None, state(&want)),
                        FieldChange::new("keys", None, join(&want.keys)),
                        FieldChange::new("channels", None, join(&want.channels)),
                        FieldChange::new("commands", None, Some("tenant data commands".into())),
                    ];
                    changes.push(Change::new(PLANE, d, resource, Op::Create, fields));
                    continue;
                };
                let mut fields = Vec::new();
                if have.on != want.on {
                    fields.push(FieldChange::new("state", state(have), state(&want)));
                }
                if have.nopass {
                    fields.push(FieldChange::new(
                        "password",
                        Some("nopass (anyone may log in)".into()),
                        Some("reset".into()),
                    ));
                }
                if have.keys != want.keys {
                    fields.push(FieldChange::new("keys", join(&have.keys), join(&want.keys)));
                }
                if have.channels != want.channels {
                    fields.push(FieldChange::new(
                        "channels",
                        join(&have.channels),
                        join(&want.channels),
                    ));
                }
                let have_commands = table.allowed(&have.commands);
                if have_commands != wanted_commands {
                    let extra: Vec<&str> = have_commands
                        .difference(&wanted_commands)
                        .copied()
                        .collect();
                    let missing = wanted_commands.difference(&have_commands).count();
                    let before = match extra.len() {
                        0 => format!("{missing} data command(s) missing"),
                        n => format!(
                            "{n} command(s) beyond the tenant's: {}{}",
                            extra.iter().take(5).copied().collect::<Vec<_>>().join(" "),
                            if n > 5 { " …" } else { "" }
                        ),
                    };
                    fields.push(FieldChange::new(
                        "commands",
                        Some(before),
                        Some("tenant data commands".into()),
                    ));
                }
                if have.selectors > 0 {
                    fields.push(FieldChange::new(
                        "selectors",
                        Some(have.selectors.to_string()),
                        Some("0".into()),
                    ));
                }
                if !fields.is_empty() {
                    changes.push(Change::new(PLANE, d, resource, Op::Update, fields));
                }
            }
        }
        Ok(changes)
    }

    async fn apply_async(&self, change: &Change) -> Result<(), PlaneError> {
        let failed = |e: redis::RedisError| PlaneError::Failed {
            plane: PLANE,
            resource: change.resource.clone(),
            message: e.to_string(),
        };
        let d = change.desired.as_ref().ok_or_else(|| PlaneError::Failed {
            plane: PLANE,
            resource: change.resource.clone(),
            message: "the change carries no desired state".into(),
        })?;
        let target = self.target_of(d)?;
        let mut c = self.connection(target).await?;
        let name = d.qualified_name();
        if change.op == Op::Delete {
            // Redis closes the connections of a deleted user itself.
            return redis::cmd("ACL")
                .arg("DELUSER")
                .arg(&name)
                .query_async::<i64>(&mut c)
                .await
                .map(drop)
                .map_err(failed);
        }
        let active = d.lifecycle == Lifecycle::Active;
        let mut set = redis::cmd("ACL");
        set.arg("SETUSER")
            .arg(&name)
            .arg(if active { "on" } else { "off" })
            .arg("resetkeys")
            .arg(format!("~{}", pattern(d)))
            .arg("resetchannels")
            .arg(format!("&{}", pattern(d)))
            .arg("clearselectors")
            .arg(rules());
        if change.fields.iter().any(|f| f.field == "password") {
            set.arg("resetpass");
        }
        set.query_async::<()>(&mut c).await.map_err(failed)?;
        if !active {
            // `off` refuses new logins only: close the sessions already open.
            redis::cmd("CLIENT")
                .arg("KILL")
                .arg("USER")
                .arg(&name)
                .query_async::<Value>(&mut c)
                .await
                .map_err(failed)?;
        }
        Ok(())
    }
}

impl Plane for RedisPlane {
    fn name(&self) -> &'static str {
        PLANE
    }

    fn locate(&self, d: &TenantEnv) -> Result<serde_json::Value, PlaneError> {
        let target = self.target_of(d)?;
        Ok(serde_json::json!({
            "type": "redis", "target": target, "user": d.qualified_name(),
            "keys": pattern(d), "channels": pattern(d),
        }))
    }

    fn plan<'a>(&'a self, desired: &'a [TenantEnv]) -> PlaneFuture<'a, Vec<Change>> {
        Box::pin(self.plan_async(desired))
    }

    fn apply<'a>(&'a self, change: &'a Change) -> PlaneFuture<'a, ()> {
        Box::pin(self.apply_async(change))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_list_lines_parse_into_what_tenancy_manages() {
        let (name, u) = User::parse(
            "user t_a_prod on #30c9 ~t_a:prod:* resetchannels &t_a:prod:* -@all +@string -keys",
        )
        .expect("user");
        assert_eq!(name, "t_a_prod");
        assert!(u.on && !u.nopass && u.selectors == 0);
        assert_eq!(u.keys, BTreeSet::from(["~t_a:prod:*".to_owned()]));
        assert_eq!(u.channels, BTreeSet::from(["&t_a:prod:*".to_owned()]));
        assert_eq!(u.commands, ["-@all", "+@string", "-keys"]);
        let (_, u) = User::parse("user x off nopass allkeys allchannels allcommands (~b:* +get)")
            .expect("user");
        assert!(!u.on && u.nopass);
        assert_eq!(u.keys, BTreeSet::from(["~*".to_owned()]));
        assert_eq!(
            (u.commands.as_slice(), u.selectors),
            (&["+@all".to_owned()][..], 1)
        );
        assert!(User::parse("not a user line").is_none());
    }

    #[test]
    fn rules_are_compared_by_what_they_allow() {
        let entry = |name: &str, cats: &[&str], subs: Vec<Value>| {
            let s = |t: &str| Value::BulkString(t.as_bytes().to_vec());
            let mut fields = vec![s(name), Value::Int(-1), Value::Array(vec![])];
            fields.extend([Value::Int(0), Value::Int(0), Value::Int(0)]);
            fields.push(Value::Array(cats.iter().map(|c| s(c)).collect()));
            fields.extend([
                Value::Array(vec![]),
                Value::Array(vec![]),
                Value::Array(subs),
            ]);
            Value::Array(fields)
        };
        let reply = Value::Array(vec![
            entry("get", &["@read", "@string", "@fast"], vec![]),
            entry("flushall", &["@write", "@dangerous", "@keyspace"], vec![]),
            entry("scan", &["@read", "@keyspace"], vec![]),
            entry(
                "pubsub",
                &["@slow"],
                vec![entry("pubsub|channels", &["@pubsub", "@slow"], vec![])],
            ),
        ]);
        let t = CommandTable::from_reply(&reply);
        let ours = t.allowed(&rules());
        assert_eq!(ours, BTreeSet::from(["get"]));
        // The same permissions however they are spelled; a wider set is not the same.
        let spelled = ["-@all".to_owned(), "+get".to_owned()];
        assert_eq!(t.allowed(&spelled), ours);
        assert!(
            t.allowed(&["+@all".to_owned(), "-pubsub".to_owned()])
                .contains("flushall")
        );
        assert!(
            !t.allowed(&["+@all".to_owned(), "-pubsub".to_owned()])
                .contains("pubsub|channels")
        );
    }
}
