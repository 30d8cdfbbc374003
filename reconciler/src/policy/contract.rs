//! The `tenancy:policy` contract versions the host serves, as wasmtime bindings: 0.2.0
//! (policies/wit) and 0.1.0 (policies/wit-0.1). A module is held and called as the version it
//! is built for; every version takes the same [`Input`] and gives the same [`Violation`]s.
//! Also the sandbox store's state: its memory budget and the inventory its lookups answer from.
//! With `host.rs` and `compile.rs`, the only code that touches wasmtime.

use wasmtime::Store;
use wasmtime::StoreContextMut;
use wasmtime::component::Linker;

/// The current contract, `tenancy:policy@0.2.0` (policies/wit).
mod bindings {
    wasmtime::component::bindgen!({
        path: "../policies/wit",
        world: "policy",
    });
}

/// The previous contract, `tenancy:policy@0.1.0` (policies/wit-0.1), still served.
mod v1 {
    wasmtime::component::bindgen!({
        path: "../policies/wit-0.1",
        world: "policy",
    });
}

pub use super::inventory::Platform;
pub use bindings::tenancy::policy::types::{Commit, Operation, PolicyInfo, Severity, Violation};

/// One evaluation's input, whatever contract version the module is built for.
#[derive(Debug, Clone)]
pub struct Input {
    pub operation: Operation,
    /// The tenant manifest as JSON.
    pub tenant: String,
    /// The previous manifest as JSON, for update/transition/delete.
    pub previous: Option<String>,
    /// The pass's inventory: looked up by 0.2.0 modules, sent whole to 0.1.0 ones.
    pub platform: Platform,
    pub commit: Commit,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Deny => "deny",
            Severity::Warn => "warn",
            Severity::Info => "info",
        }
    }
}

/// One sandbox's resource budget: every linear memory and table of the evaluation together
/// (not each on its own), plus caps on how many of each it may create.
pub(super) struct HostState {
    /// Bytes of memory and table the sandbox may still take.
    left: usize,
    budget: usize,
    /// What `tenancy:policy/platform` answers from (empty while `info()` runs).
    platform: Platform,
    /// Platform lookups the module made.
    pub(super) lookups: u64,
}

/// A table element's cost against the sandbox's budget (a function reference).
const TABLE_ELEMENT_BYTES: usize = 8;

impl wasmtime::ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.take(desired.saturating_sub(current))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.take(
            desired
                .saturating_sub(current)
                .saturating_mul(TABLE_ELEMENT_BYTES),
        )
    }

    fn instances(&self) -> usize {
        8
    }

    fn tables(&self) -> usize {
        8
    }

    fn memories(&self) -> usize {
        8
    }
}

impl HostState {
    /// A sandbox that may take `budget` bytes of memory and tables.
    pub(super) fn new(budget: usize) -> HostState {
        HostState {
            left: budget,
            budget,
            platform: Platform::default(),
            lookups: 0,
        }
    }

    fn take(&mut self, bytes: usize) -> wasmtime::Result<bool> {
        if bytes > self.left {
            // A trap, not a quiet `false`: the module learns nothing and cannot carry on.
            return Err(wasmtime::Error::msg(format!(
                "forcing trap when growing memory: the sandbox's {} MiB (all memories and tables together) would be exceeded",
                self.budget >> 20
            )));
        }
        self.left -= bytes;
        Ok(true)
    }
}

/// What one platform lookup costs in fuel: a fixed part for the call itself (lifting the
/// name, finding the entry, lowering the answer), and a part for every byte it moves in or
/// out. Host work is thereby metered like the module's own: a module that looks things up
/// without end runs out of fuel at the same lookup on every machine, long before the
/// wall-clock limit, instead of at whatever point a slow or loaded host reaches it.
const LOOKUP_FUEL: u64 = 10_000;
const LOOKUP_FUEL_PER_BYTE: u64 = 4;

/// Charge `bytes` moved by one lookup against the evaluation's fuel; out of fuel is the same
/// trap the module's own instructions meet.
fn charge(store: &mut StoreContextMut<'_, HostState>, bytes: usize) -> wasmtime::Result<()> {
    store.data_mut().lookups += 1;
    let cost = LOOKUP_FUEL.saturating_add((bytes as u64).saturating_mul(LOOKUP_FUEL_PER_BYTE));
    let left = store.get_fuel()?;
    if cost > left {
        store.set_fuel(0)?;
        return Err(wasmtime::Trap::OutOfFuel.into());
    }
    store.set_fuel(left - cost)
}

/// The read-only inventory lookups of contract 0.2.0, each charged in fuel (see
/// [`LOOKUP_FUEL`]). What they copy into the sandbox is allocated by the module's own
/// `cabi_realloc`, so it counts against the sandbox's memory as well; what the module passes
/// in is bounded by the hostcall fuel of each call.
fn link_platform(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    type Found = wasmtime::Result<(Option<String>,)>;
    type Names = wasmtime::Result<(Vec<String>,)>;
    fn entry(
        mut store: StoreContextMut<'_, HostState>,
        name: &str,
        get: for<'a> fn(&'a Platform, &str) -> Option<&'a str>,
    ) -> Found {
        let found = get(&store.data().platform, name).map(str::to_owned);
        charge(
            &mut store,
            name.len() + found.as_ref().map_or(0, String::len),
        )?;
        Ok((found,))
    }
    fn names(mut store: StoreContextMut<'_, HostState>, get: fn(&Platform) -> &[String]) -> Names {
        let names = get(&store.data().platform).to_vec();
        let bytes = names.iter().map(|n| n.len() + 8).sum();
        charge(&mut store, bytes)?;
        Ok((names,))
    }
    let mut platform = linker.instance("tenancy:policy/platform@0.2.0")?;
    platform.func_wrap("region", |s, (name,): (String,)| {
        entry(s, &name, Platform::region)
    })?;
    platform.func_wrap("plan", |s, (name,): (String,)| {
        entry(s, &name, Platform::plan)
    })?;
    platform.func_wrap("region-names", |s, (): ()| names(s, Platform::region_names))?;
    platform.func_wrap("plan-names", |s, (): ()| names(s, Platform::plan_names))?;
    Ok(())
}

/// Link what each served version may import: 0.1.0's types-only interface, and 0.2.0's types
/// and metered platform lookups.
pub(super) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.instance("tenancy:policy/types@0.1.0")?;
    linker.instance("tenancy:policy/types@0.2.0")?;
    link_platform(linker)
}

/// A module ready to instantiate, by the contract version it is built for.
pub(super) enum Pre {
    V1(v1::PolicyPre<HostState>),
    V2(bindings::PolicyPre<HostState>),
}

/// One fresh instance of a module.
pub(super) enum Instance {
    V1(v1::Policy),
    V2(bindings::Policy),
}

impl Pre {
    /// Type-check the component's exports against the contract version its imports name,
    /// or, if it imports none, against each served version, newest first.
    pub(super) fn new(
        instance_pre: wasmtime::component::InstancePre<HostState>,
        contract: Option<&str>,
    ) -> wasmtime::Result<Pre> {
        let v2 = |p| bindings::PolicyPre::new(p).map(Pre::V2);
        let v1 = |p| v1::PolicyPre::new(p).map(Pre::V1);
        match contract {
            Some("0.1.0") => v1(instance_pre),
            Some(_) => v2(instance_pre),
            None => v2(instance_pre.clone()).or_else(|e| v1(instance_pre).map_err(|_| e)),
        }
    }

    /// The contract version the module is built for.
    pub(super) fn version(&self) -> &'static str {
        match self {
            Pre::V1(_) => "0.1.0",
            Pre::V2(_) => "0.2.0",
        }
    }

    pub(super) fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Instance> {
        Ok(match self {
            Pre::V1(p) => Instance::V1(p.instantiate(&mut *store)?),
            Pre::V2(p) => Instance::V2(p.instantiate(&mut *store)?),
        })
    }
}

impl Instance {
    pub(super) fn info(&self, store: &mut Store<HostState>) -> wasmtime::Result<PolicyInfo> {
        match self {
            Instance::V1(p) => p.call_info(store).map(|i| PolicyInfo {
                name: i.name,
                version: i.version,
                rules: i.rules,
            }),
            Instance::V2(p) => p.call_info(store),
        }
    }

    pub(super) fn evaluate(
        &self,
        store: &mut Store<HostState>,
        input: &Input,
    ) -> wasmtime::Result<Vec<Violation>> {
        match self {
            Instance::V2(p) => {
                store.data_mut().platform = input.platform.clone();
                let lowered = bindings::tenancy::policy::types::Input {
                    operation: input.operation,
                    tenant: input.tenant.clone(),
                    previous: input.previous.clone(),
                    commit: input.commit.clone(),
                };
                p.call_evaluate(store, &lowered)
            }
            Instance::V1(p) => {
                use v1::tenancy::policy::types as old;
                let lowered = old::Input {
                    operation: match input.operation {
                        Operation::Create => old::Operation::Create,
                        Operation::Update => old::Operation::Update,
                        Operation::Transition => old::Operation::Transition,
                        Operation::Delete => old::Operation::Delete,
                    },
                    tenant: input.tenant.clone(),
                    previous: input.previous.clone(),
                    platform: input.platform.json().to_owned(),
                    commit: old::Commit {
                        sha: input.commit.sha.clone(),
                        author: input.commit.author.clone(),
                    },
                };
                let found = p.call_evaluate(store, &lowered)?;
                Ok(found
                    .into_iter()
                    .map(|v| Violation {
                        rule: v.rule,
                        message: v.message,
                        path: v.path,
                        severity: match v.severity {
                            old::Severity::Deny => Severity::Deny,
                            old::Severity::Warn => Severity::Warn,
                            old::Severity::Info => Severity::Info,
                        },
                    })
                    .collect())
            }
        }
    }
}
