//! The WebAssembly sandbox. The only code in the project that touches wasmtime.
//!
//! One [`Engine`]; components compiled once per sha256 digest; a fresh [`Store`] per
//! evaluation with fuel, memory and wall-clock (epoch) limits; nothing linked but the contract's
//! types, so a module that imports files, sockets, clocks, randomness or environment cannot be
//! instantiated at all. Every failure — digest mismatch, compile error, wrong exports, trap,
//! exhausted limit, oversized or malformed output — becomes a [`Failure`] the caller turns into
//! a deny; nothing here panics on module behaviour.

use super::bundle::{Entry, Limits};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder, Trap};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../policies/wit",
        world: "policy",
    });
}

pub use bindings::tenancy::policy::types::{
    Commit, Input, Operation, PolicyInfo, Severity, Violation,
};

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Deny => "deny",
            Severity::Warn => "warn",
            Severity::Info => "info",
        }
    }
}

impl From<super::bundle::OperationKind> for Operation {
    fn from(op: super::bundle::OperationKind) -> Operation {
        use super::bundle::OperationKind as K;
        match op {
            K::Create => Operation::Create,
            K::Update => Operation::Update,
            K::Transition => Operation::Transition,
            K::Delete => Operation::Delete,
        }
    }
}

/// How often the epoch ticks; the wall-clock limit is counted in ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Why a module could not give a verdict. Always reported as a deny naming the module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("cannot read module {path}: {message}")]
    Read { path: String, message: String },
    #[error(
        "module digest sha256:{actual} does not match the bundle's sha256:{expected}; refusing to load it"
    )]
    DigestMismatch { expected: String, actual: String },
    #[error("module is not a valid WebAssembly component: {0}")]
    Compile(String),
    #[error("module does not implement the tenancy:policy contract: {0}")]
    Contract(String),
    #[error("module exceeded its fuel limit ({0} units): it runs too long or loops forever")]
    Fuel(u64),
    #[error("module exceeded its time limit ({0} ms)")]
    Timeout(u64),
    #[error("module exceeded its memory limit ({0} MiB)")]
    Memory(u64),
    #[error("module overflowed its stack (unbounded recursion?)")]
    StackOverflow,
    #[error("module trapped: {0}")]
    Trap(String),
    #[error("module returned {size} bytes of violations, more than its {limit}-byte output limit")]
    OutputTooLarge { size: u64, limit: u64 },
    #[error("module returned a malformed violation: {0}")]
    Malformed(String),
}

/// Where one evaluation's time went.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timing {
    /// Fresh store, limits and instantiation from the pre-linked component.
    pub instantiate: Duration,
    /// Lowering the input into the sandbox, running, and lifting the violations out.
    pub call: Duration,
}

struct HostState {
    limits: StoreLimits,
}

/// A compiled, contract-checked module, shared by every evaluation of that digest.
pub struct LoadedModule {
    pub digest: String,
    pub info: PolicyInfo,
    pre: bindings::PolicyPre<HostState>,
    pub compile_time: Duration,
}

/// The sandbox host: one engine, a cache of compiled modules by digest.
pub struct PolicyHost {
    engine: Engine,
    linker: Linker<HostState>,
    cache: Mutex<HashMap<String, Arc<LoadedModule>>>,
}

/// Largest linear memory a policy may have; per-policy `memoryMiB` limits are capped here.
pub const MAX_MEMORY_MIB: u64 = 256;

/// Largest module accepted (a JavaScript policy, engine included, is ~12 MiB).
pub const MAX_MODULE_BYTES: usize = 64 << 20;

/// Concurrent sandboxes the pool keeps slots for (evaluations beyond that wait for a slot).
const POOL_SLOTS: u32 = 64;

fn engine_config() -> Config {
    let mut config = Config::new();
    // Instantiating from pre-reserved slots, with memory reset by madvise instead of mmap/munmap,
    // is what makes a fresh sandbox per evaluation cheap (tens of microseconds).
    let mut pool = wasmtime::PoolingAllocationConfig::default();
    pool.total_component_instances(POOL_SLOTS)
        .total_core_instances(POOL_SLOTS * 4)
        .total_memories(POOL_SLOTS * 2)
        .total_tables(POOL_SLOTS * 4)
        .max_memories_per_component(2)
        .max_memory_size((MAX_MEMORY_MIB as usize) << 20)
        // Reset memory with memset rather than madvise: in a multi-threaded process every
        // madvise/mprotect costs a TLB shootdown on every core, which serialised evaluations.
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(64 << 10);
    config.memory_init_cow(false);
    config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    config.consume_fuel(true);
    config.epoch_interruption(true);
    config.wasm_component_model(true);
    // Deep recursion traps as a stack overflow long before the host's own stack is at risk.
    config.max_wasm_stack(1 << 20);
    config.cache(compile_cache());
    config
}

/// Wasmtime's on-disk compilation cache (keyed by module bytes, engine settings and Wasmtime
/// version), so a command does not recompile unchanged policies: ~0.1 s per module saved on
/// every run. Directory: `$TENANCY_CACHE_DIR/wasmtime`, else the user cache directory
/// (`~/.cache/wasmtime`); `TENANCY_COMPILE_CACHE=off` disables it. A cache that cannot be set
/// up only costs the recompilation.
fn compile_cache() -> Option<wasmtime::Cache> {
    if std::env::var("TENANCY_COMPILE_CACHE").is_ok_and(|v| v == "off") {
        return None;
    }
    let mut config = wasmtime::CacheConfig::new();
    if let Some(dir) = std::env::var_os("TENANCY_CACHE_DIR") {
        config.with_directory(std::path::PathBuf::from(dir).join("wasmtime"));
    }
    match wasmtime::Cache::new(config) {
        Ok(cache) => Some(cache),
        Err(e) => {
            tracing::warn!(error = %e, "policy compilation cache unavailable; compiling every run");
            None
        }
    }
}

impl PolicyHost {
    pub fn new() -> Result<PolicyHost, Failure> {
        let engine =
            Engine::new(&engine_config()).map_err(|e| Failure::Compile(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        // The contract's `types` interface carries only types; it is the one import allowed.
        linker
            .instance("tenancy:policy/types@0.1.0")
            .map_err(|e| Failure::Contract(format!("{e:#}")))?;
        start_epoch_ticker(&engine);
        Ok(PolicyHost {
            engine,
            linker,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Read, verify, compile and check a bundle entry's module (once per digest).
    pub fn load(&self, entry: &Entry) -> Result<Arc<LoadedModule>, Failure> {
        let read_error = |e: std::io::Error| Failure::Read {
            path: entry.module_ref.clone(),
            message: e.to_string(),
        };
        let size = std::fs::metadata(&entry.module).map_err(read_error)?.len();
        if size > MAX_MODULE_BYTES as u64 {
            return Err(Failure::Compile(format!(
                "module is {size} bytes, more than the {MAX_MODULE_BYTES}-byte limit"
            )));
        }
        let bytes = std::fs::read(&entry.module).map_err(read_error)?;
        self.load_bytes(&bytes, &entry.sha256)
    }

    /// Verify `bytes` against `expected_sha256` before anything else, then compile and check.
    pub fn load_bytes(
        &self,
        bytes: &[u8],
        expected_sha256: &str,
    ) -> Result<Arc<LoadedModule>, Failure> {
        if bytes.len() > MAX_MODULE_BYTES {
            return Err(Failure::Compile(format!(
                "module is {} bytes, more than the {MAX_MODULE_BYTES}-byte limit",
                bytes.len()
            )));
        }
        let actual = hex::encode(Sha256::digest(bytes));
        if !actual.eq_ignore_ascii_case(expected_sha256) {
            return Err(Failure::DigestMismatch {
                expected: expected_sha256.to_owned(),
                actual,
            });
        }
        if let Some(hit) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&actual)
        {
            return Ok(hit.clone());
        }
        let started = Instant::now();
        let component = Component::from_binary(&self.engine, bytes)
            .map_err(|e| Failure::Compile(format!("{e:#}")))?;
        check_imports(&self.engine, &component)?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| Failure::Contract(format!("{e:#}")))?;
        let pre = bindings::PolicyPre::new(instance_pre)
            .map_err(|e| Failure::Contract(format!("{e:#}")))?;
        let compile_time = started.elapsed();
        let mut loaded = LoadedModule {
            digest: actual.clone(),
            info: PolicyInfo {
                name: String::new(),
                version: String::new(),
                rules: Vec::new(),
            },
            pre,
            compile_time,
        };
        let limits = Limits::default();
        let info = self.call(&loaded, &limits, |p, s| p.call_info(s))?;
        let size: usize = info.name.len()
            + info.version.len()
            + info.rules.iter().map(String::len).sum::<usize>();
        if size as u64 > limits.max_output_bytes {
            return Err(Failure::OutputTooLarge {
                size: size as u64,
                limit: limits.max_output_bytes,
            });
        }
        if info.name.is_empty() {
            return Err(Failure::Malformed(
                "info() returned an empty policy name".into(),
            ));
        }
        loaded.info = info;
        let loaded = Arc::new(loaded);
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(actual, loaded.clone());
        Ok(loaded)
    }

    /// Evaluate one input in a fresh sandbox.
    pub fn evaluate(
        &self,
        module: &LoadedModule,
        limits: &Limits,
        input: &Input,
    ) -> Result<Vec<Violation>, Failure> {
        let violations = self.call(module, limits, |p, s| p.call_evaluate(s, input))?;
        let size: u64 = violations
            .iter()
            .map(|v| (v.rule.len() + v.message.len() + v.path.len()) as u64)
            .sum();
        if size > limits.max_output_bytes {
            return Err(Failure::OutputTooLarge {
                size,
                limit: limits.max_output_bytes,
            });
        }
        for v in &violations {
            check_violation(v)?;
        }
        Ok(violations)
    }

    /// [`PolicyHost::evaluate`] with the time split between creating the sandbox (store +
    /// instantiation) and the call itself (lowering the input, running, lifting the output).
    pub fn evaluate_timed(
        &self,
        module: &LoadedModule,
        limits: &Limits,
        input: &Input,
    ) -> (Result<Vec<Violation>, Failure>, Timing) {
        let mut timing = Timing::default();
        let r = self.call_timed(
            module,
            limits,
            |p, s| p.call_evaluate(s, input),
            Some(&mut timing),
        );
        (r, timing)
    }

    fn call<R>(
        &self,
        module: &LoadedModule,
        limits: &Limits,
        f: impl FnOnce(&bindings::Policy, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, Failure> {
        self.call_timed(module, limits, f, None)
    }

    fn call_timed<R>(
        &self,
        module: &LoadedModule,
        limits: &Limits,
        f: impl FnOnce(&bindings::Policy, &mut Store<HostState>) -> wasmtime::Result<R>,
        timing: Option<&mut Timing>,
    ) -> Result<R, Failure> {
        let started = Instant::now();
        let memory_mib = limits.memory_mib.min(MAX_MEMORY_MIB);
        let memory_bytes =
            usize::try_from(memory_mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        let state = HostState {
            limits: StoreLimitsBuilder::new()
                .memory_size(memory_bytes)
                .instances(8)
                .memories(8)
                .tables(8)
                .table_elements(1 << 16)
                .trap_on_grow_failure(true)
                .build(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store
            .set_fuel(limits.fuel)
            .map_err(|e| Failure::Trap(format!("{e:#}")))?;
        let ticks = limits
            .timeout_ms
            .div_ceil(EPOCH_TICK.as_millis() as u64)
            .max(1)
            + 1;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        let instance = module.pre.instantiate(&mut store);
        let instantiated = Instant::now();
        let result = instance.and_then(|policy| f(&policy, &mut store));
        if let Some(t) = timing {
            t.instantiate = instantiated - started;
            t.call = instantiated.elapsed();
        }
        result.map_err(|e| classify(&e, limits))
    }
}

fn classify(e: &wasmtime::Error, limits: &Limits) -> Failure {
    if let Some(trap) = e.downcast_ref::<Trap>() {
        return match trap {
            Trap::OutOfFuel => Failure::Fuel(limits.fuel),
            Trap::Interrupt => Failure::Timeout(limits.timeout_ms),
            Trap::StackOverflow => Failure::StackOverflow,
            other => Failure::Trap(other.to_string()),
        };
    }
    let text = format!("{e:#}");
    if text.contains("forcing trap when growing memory") || text.contains("memory minimum size") {
        return Failure::Memory(limits.memory_mib);
    }
    Failure::Trap(text)
}

/// The contract's types interface is the one import a policy may have.
const ALLOWED_IMPORT: &str = "tenancy:policy/types@";

/// Refuse, before linking, a component that imports anything the sandbox does not grant,
/// naming every such import and what it would have given the module.
fn check_imports(engine: &Engine, component: &Component) -> Result<(), Failure> {
    let forbidden: Vec<String> = component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_owned())
        .filter(|name| !name.starts_with(ALLOWED_IMPORT))
        .collect();
    if forbidden.is_empty() {
        return Ok(());
    }
    let grants = |name: &str| {
        if name.starts_with("wasi:filesystem") {
            " (file system)"
        } else if name.starts_with("wasi:sockets") || name.starts_with("wasi:http") {
            " (network)"
        } else if name.starts_with("wasi:clocks") {
            " (clock)"
        } else if name.starts_with("wasi:random") {
            " (randomness)"
        } else if name.starts_with("wasi:cli/environment") {
            " (environment)"
        } else {
            ""
        }
    };
    let listed: Vec<String> = forbidden
        .iter()
        .map(|n| format!("`{n}`{}", grants(n)))
        .collect();
    Err(Failure::Contract(format!(
        "it imports {}; policies may import nothing but tenancy:policy/types (build for wasm32-unknown-unknown, see policies/README.md)",
        listed.join(", ")
    )))
}

fn check_violation(v: &Violation) -> Result<(), Failure> {
    let rule_ok = !v.rule.is_empty()
        && v.rule.len() <= 128
        && v.rule
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'));
    if !rule_ok {
        return Err(Failure::Malformed(format!(
            "rule id {} is not of the form `policy.rule-name`",
            crate::diagnostics::quote(&v.rule)
        )));
    }
    if !(v.path.is_empty() || v.path.starts_with('/')) {
        return Err(Failure::Malformed(format!(
            "path {} is not a JSON pointer",
            crate::diagnostics::quote(&v.path)
        )));
    }
    if v.message.trim().is_empty() {
        return Err(Failure::Malformed(format!(
            "violation `{}` has no message",
            v.rule
        )));
    }
    Ok(())
}

/// One background thread per engine advances the epoch, so a module that runs past its
/// deadline is interrupted even while every worker thread is busy inside WebAssembly.
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("tenancy-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the policy epoch ticker ({e}); time limits fall back to fuel");
    }
}
