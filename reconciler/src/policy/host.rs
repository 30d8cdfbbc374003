//! The WebAssembly sandbox. With `contract.rs` (the contract's bindings) and `compile.rs`, the
//! only code in the project that touches wasmtime.
//!
//! One [`Engine`]; components compiled once per sha256 digest; a fresh [`Store`] per
//! evaluation with fuel, memory and wall-clock (epoch) limits; nothing linked but the contract
//! (its types, and from 0.2.0 the read-only platform lookups of [`super::contract`]), so a
//! module that imports files, sockets, clocks, randomness or environment cannot be instantiated
//! at all. Every failure — digest mismatch, compile error, wrong exports, trap,
//! exhausted limit, oversized or malformed output — becomes a [`Failure`] the caller turns into
//! a deny; nothing here panics on module behaviour.

pub use super::bounds::{OutputBudget, RUN_OUTPUT_BYTES, SANDBOX_MEMORY_MIB};
use super::bounds::{SandboxMemory, copy_bound, keep, most_violations};
use super::bundle::{Entry, Limits};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, Store, Trap};

pub use super::contract::{Commit, Input, Operation, Platform, PolicyInfo, Severity, Violation};
use super::contract::{HostState, Instance, Pre};

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
    #[error("module is refused before compiling: {0}")]
    Shape(String),
    #[error("module exceeded its compile budget: {0}")]
    CompileBudget(String),
    #[error("module does not implement the tenancy:policy contract: {0}")]
    Contract(String),
    #[error("module exceeded its fuel limit ({0} units): it runs too long or loops forever")]
    Fuel(u64),
    #[error("module exceeded its time limit ({0} ms)")]
    Timeout(u64),
    #[error("module exceeded its memory limit ({0} MiB, all its memories and tables together)")]
    Memory(u64),
    #[error("module overflowed its stack (unbounded recursion?)")]
    StackOverflow,
    #[error("module trapped: {0}")]
    Trap(String),
    #[error("module returned {size} bytes of violations, more than its {limit}-byte output limit")]
    OutputTooLarge { size: u64, limit: u64 },
    #[error("module returned malformed output: {0}")]
    Malformed(String),
    #[error(
        "module returned more than its output limits allow ({violations} violations, {bytes} bytes); the host stopped copying it"
    )]
    OutputFlood { violations: u64, bytes: u64 },
    #[error(
        "module passed the host more than {bytes} bytes in one platform lookup (a region or plan name is a few dozen)"
    )]
    LookupFlood { bytes: u64 },
    #[error("module returned {count} violations, more than its limit of {limit}")]
    TooManyViolations { count: usize, limit: u64 },
    #[error("module is built for {found}; this host serves {supported}")]
    Version { found: String, supported: String },
}

impl Failure {
    /// The kind of failure, stable for scripts (`policy inspect --output json`'s `reason`).
    pub fn class(&self) -> &'static str {
        match self {
            Failure::Read { .. } => "read",
            Failure::DigestMismatch { .. } => "digest",
            Failure::Compile(_) => "compile",
            Failure::Shape(_) => "shape",
            Failure::CompileBudget(_) => "compile-budget",
            Failure::Contract(_) => "contract",
            Failure::Version { .. } => "version",
            Failure::Fuel(_) => "fuel",
            Failure::Timeout(_) => "timeout",
            Failure::Memory(_) => "memory",
            Failure::StackOverflow => "stack",
            Failure::Trap(_) => "trap",
            Failure::OutputTooLarge { .. } | Failure::OutputFlood { .. } => "output",
            Failure::LookupFlood { .. } => "lookup",
            Failure::TooManyViolations { .. } => "violations",
            Failure::Malformed(_) => "malformed",
        }
    }
}

/// Where one evaluation's time went.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timing {
    /// Fresh store, limits and instantiation from the pre-linked component.
    pub instantiate: Duration,
    /// Lowering the input into the sandbox, running, and lifting the violations out.
    pub call: Duration,
    /// Dropping the sandbox: its memory reset for the next one and its slot returned.
    pub teardown: Duration,
    /// Fuel the evaluation used: the module's instructions and its platform lookups.
    pub fuel: u64,
    /// Platform lookups the module made (each charged in fuel, see `contract::LOOKUP_FUEL`).
    pub lookups: u64,
}

/// A compiled, contract-checked module, shared by every evaluation of that digest.
pub struct LoadedModule {
    pub digest: String,
    pub info: PolicyInfo,
    pre: Pre,
    /// Time this process spent getting it ready (compiling, or loading the cached artifact).
    pub compile_time: Duration,
    /// What compiling it cost, as measured when it was compiled.
    pub cost: super::compile::Cost,
    pub shape: super::shape::Shape,
}

impl LoadedModule {
    /// The `tenancy:policy` version the module is built for.
    pub fn contract(&self) -> &'static str {
        self.pre.version()
    }
}

/// The sandbox host: one engine, a cache of compiled modules by digest.
pub struct PolicyHost {
    engine: Engine,
    linker: Linker<HostState>,
    cache: Mutex<HashMap<String, Arc<LoadedModule>>>,
    memory: SandboxMemory,
}

/// Largest linear memory a policy may have; per-policy `memoryMiB` limits are capped here.
pub(crate) const MAX_MEMORY_MIB: u64 = 256;

/// Largest module accepted (a JavaScript policy, engine included, is ~12 MiB).
pub(crate) const MAX_MODULE_BYTES: usize = 64 << 20;

/// Most violations one evaluation may return, whatever a bundle says.
pub(crate) const MAX_VIOLATIONS: u64 = 1_000;

/// The contract versions this host serves (`package tenancy:policy@…` in policies/wit).
pub(crate) const SUPPORTED_VERSIONS: &[&str] = &["0.1.0", "0.2.0"];

/// The longest `info()` name, version and rule id, and the most rules.
pub(crate) const MAX_NAME: usize = 64;
pub(crate) const MAX_RULES: usize = 256;
pub(crate) const MAX_RULE: usize = 128;
/// The longest violation message and path.
pub(crate) const MAX_MESSAGE: usize = 4096;
pub(crate) const MAX_PATH: usize = 1024;

/// Read a module file: a regular file only (a named pipe would block the read forever, a
/// device would never end), and never more than [`MAX_MODULE_BYTES`] whatever the file system
/// says its size is. `shown` names it in errors.
pub(crate) fn read_module(path: &std::path::Path, shown: &str) -> Result<Vec<u8>, Failure> {
    use crate::source::BoundedRead as R;
    crate::source::read_bounded(path, MAX_MODULE_BYTES as u64).map_err(|e| match e {
        R::TooLarge => Failure::Compile(format!(
            "module is more than the {MAX_MODULE_BYTES}-byte limit"
        )),
        other => Failure::Read {
            path: shown.to_owned(),
            message: other.to_string(),
        },
    })
}

/// Concurrent sandboxes the pool keeps slots for (evaluations beyond that wait for a slot).
const POOL_SLOTS: u32 = 64;

/// The engine's settings. The host runs with the pooling allocator; the compiler child
/// (`pooling = false`) produces artifacts for the same settings without reserving a pool.
pub(crate) fn engine_config(pooling: bool) -> Config {
    let mut config = Config::new();
    if pooling {
        // Instantiating from pre-reserved slots, with memory reset by memset instead of
        // mmap/munmap, is what makes a fresh sandbox per evaluation cheap (tens of µs).
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_component_instances(POOL_SLOTS)
            .total_core_instances(POOL_SLOTS * 4)
            .total_memories(POOL_SLOTS * 2)
            .total_tables(POOL_SLOTS * 4)
            .max_memories_per_component(2)
            .max_memory_size((MAX_MEMORY_MIB as usize) << 20)
            // Reset memory with memset rather than madvise: in a multi-threaded process every
            // madvise/mprotect costs a TLB shootdown on every core, which serialised evaluations.
            // Every page of a sandbox's memory is reset after each evaluation (up to this much),
            // so the time is proportional to the module's memory: the SDK keeps a standard
            // policy's to one 64 KiB page (~1.8 µs). The PAGEMAP_SCAN ioctl, which would reset only the
            // written pages, measured slower at that size and stays off.
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(64 << 10);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    }
    config.memory_init_cow(false);
    // For profiling policies: with `perf`, compiled guest functions by name
    // (/tmp/perf-<pid>.map; see policies/README.md).
    if std::env::var_os("TENANCY_WASM_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    config.consume_fuel(true);
    config.epoch_interruption(true);
    config.wasm_component_model(true);
    // Deep recursion traps as a stack overflow long before the host's own stack is at risk.
    config.max_wasm_stack(1 << 20);
    config
}

impl PolicyHost {
    pub fn new() -> Result<PolicyHost, Failure> {
        let engine =
            Engine::new(&engine_config(true)).map_err(|e| Failure::Compile(wasm_text(&e)))?;
        let mut linker = Linker::new(&engine);
        // The served contract versions' interfaces, and nothing else.
        super::contract::link(&mut linker).map_err(|e| Failure::Contract(wasm_text(&e)))?;
        start_epoch_ticker(&engine);
        Ok(PolicyHost {
            engine,
            linker,
            cache: Mutex::new(HashMap::new()),
            memory: SandboxMemory::new(),
        })
    }

    /// Read, verify, compile and check a bundle entry's module (once per digest), within
    /// the entry's compile budget.
    pub fn load(&self, entry: &Entry) -> Result<Arc<LoadedModule>, Failure> {
        let bytes = read_module(&entry.module, &entry.module_ref)?;
        self.load_with(&bytes, &entry.sha256, &entry.limits)
    }

    /// [`PolicyHost::load_with`] under the default limits.
    pub fn load_bytes(
        &self,
        bytes: &[u8],
        expected_sha256: &str,
    ) -> Result<Arc<LoadedModule>, Failure> {
        self.load_with(bytes, expected_sha256, &Limits::default())
    }

    /// Verify `bytes` against `expected_sha256` before anything else; read and judge the
    /// module's shape; compile it within `limits`' compile budget; check the contract.
    pub fn load_with(
        &self,
        bytes: &[u8],
        expected_sha256: &str,
        limits: &Limits,
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
        let budget = limits.compile_budget();
        let hit = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&actual)
            .cloned();
        if let Some(hit) = hit {
            // Compiled once under some budget; judged again under this one.
            hit.cost.check(budget)?;
            return Ok(hit);
        }
        let started = Instant::now();
        let shape = super::shape::read(bytes)?;
        shape.check(SUPPORTED_VERSIONS)?;
        let (component, cost) = super::compile::compile(&self.engine, bytes, &actual, budget)?;
        check_imports(&self.engine, &component)?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| Failure::Contract(wasm_text(&e)))?;
        let pre = Pre::new(instance_pre, shape.contract.as_deref())
            .map_err(|e| Failure::Contract(wasm_text(&e)))?;
        let mut loaded = LoadedModule {
            digest: actual.clone(),
            info: PolicyInfo {
                name: String::new(),
                version: String::new(),
                rules: Vec::new(),
            },
            pre,
            compile_time: started.elapsed(),
            cost,
            shape,
        };
        let info = self.call_timed(
            &loaded,
            limits,
            |p, store| {
                store.set_hostcall_fuel(copy_bound(
                    limits,
                    MAX_RULES as u64 + 2,
                    std::mem::size_of::<String>(),
                ));
                p.info(store)
            },
            None,
        )?;
        let size: usize = info.name.len()
            + info.version.len()
            + info.rules.iter().map(String::len).sum::<usize>();
        if size as u64 > limits.max_output_bytes {
            return Err(Failure::OutputTooLarge {
                size: size as u64,
                limit: limits.max_output_bytes,
            });
        }
        check_info(&info)?;
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
        self.evaluate_within(module, limits, input, &OutputBudget::new(u64::MAX))
            .map(|(violations, _)| violations)
    }

    /// [`PolicyHost::evaluate`], holding what it copies out of the sandbox against `budget`
    /// (shared by every evaluation of a run). Past the budget, an evaluation keeps only its
    /// first violation of each severity (so a deny still denies) and says how many it cut.
    pub(crate) fn evaluate_within(
        &self,
        module: &LoadedModule,
        limits: &Limits,
        input: &Input,
        budget: &OutputBudget,
    ) -> Result<(Vec<Violation>, usize), Failure> {
        let violations =
            self.call_timed(module, limits, |p, store| p.evaluate(store, input), None)?;
        keep(violations, limits, budget)
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
            |p, store| p.evaluate(store, input),
            Some(&mut timing),
        );
        let budget = OutputBudget::new(u64::MAX);
        (
            r.and_then(|v| keep(v, limits, &budget)).map(|(v, _)| v),
            timing,
        )
    }

    /// Run `f` in a fresh sandbox under `limits`.
    fn call_timed<R>(
        &self,
        module: &LoadedModule,
        limits: &Limits,
        f: impl FnOnce(&Instance, &mut Store<HostState>) -> wasmtime::Result<R>,
        timing: Option<&mut Timing>,
    ) -> Result<R, Failure> {
        let started = Instant::now();
        let memory_mib = limits.memory_mib.min(MAX_MEMORY_MIB);
        // The sandboxes of all threads together stay within the host's memory, however many
        // cores run them: an evaluation waits for its share before it may start.
        let _share = self
            .memory
            .acquire(memory_mib + limits.max_output_bytes.div_ceil(1 << 20));
        let memory_bytes =
            usize::try_from(memory_mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        let state = HostState::new(memory_bytes);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| s as &mut dyn wasmtime::ResourceLimiter);
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
        // What the host copies out is bounded as it copies (see `copy_bound`).
        store.set_hostcall_fuel(copy_bound(
            limits,
            most_violations(limits),
            std::mem::size_of::<Violation>(),
        ));
        let instance = module.pre.instantiate(&mut store);
        let instantiated = Instant::now();
        let result = instance.and_then(|policy| f(&policy, &mut store));
        let called = Instant::now();
        // What the module may pass the host in one call, as `f` left it.
        let hostcall_bound = store.hostcall_fuel() as u64;
        let mut timing = timing;
        if let Some(t) = timing.as_deref_mut() {
            t.fuel = limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
            t.lookups = store.data().lookups;
        }
        drop(store);
        if let Some(t) = timing {
            t.instantiate = instantiated - started;
            t.call = called - instantiated;
            t.teardown = called.elapsed();
        }
        result.map_err(|e| classify(&e, limits, hostcall_bound))
    }
}

/// Wasmtime's text about a module, which may quote the module (export and function names):
/// printable.
pub(crate) fn wasm_text(e: &wasmtime::Error) -> String {
    crate::diagnostics::printable(&format!("{e:#}")).into_owned()
}

/// `hostcall_bound`: the bytes a module could pass the host in one call in this sandbox.
fn classify(e: &wasmtime::Error, limits: &Limits, hostcall_bound: u64) -> Failure {
    if let Some(trap) = e.downcast_ref::<Trap>() {
        return match trap {
            Trap::OutOfFuel => Failure::Fuel(limits.fuel),
            Trap::Interrupt => Failure::Timeout(limits.timeout_ms),
            Trap::StackOverflow => Failure::StackOverflow,
            other => Failure::Trap(other.to_string()),
        };
    }
    // Wasmtime's text names the module's own functions (its name section): printable.
    let text = crate::diagnostics::printable(&format!("{e:#}")).into_owned();
    if text.contains("forcing trap when growing memory") || text.contains("memory minimum size") {
        return Failure::Memory(limits.memory_mib);
    }
    if text.contains("fuel allocated for hostcalls has been exhausted") {
        // With the module's frames on the stack, it was calling the host (a platform
        // lookup), not returning its result.
        if e.downcast_ref::<wasmtime::WasmBacktrace>()
            .is_some_and(|b| !b.frames().is_empty())
        {
            return Failure::LookupFlood {
                bytes: hostcall_bound,
            };
        }
        return Failure::OutputFlood {
            violations: most_violations(limits),
            bytes: limits.max_output_bytes,
        };
    }
    Failure::Trap(text)
}

/// The component's imports as Wasmtime sees them, judged again after compiling (the shape
/// check before compiling read the same names from the bytes).
fn check_imports(engine: &Engine, component: &Component) -> Result<(), Failure> {
    let imports: Vec<String> = component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    super::shape::check_contract(&imports, SUPPORTED_VERSIONS)
}

/// A rule id: `policy.rule-name` — lowercase ASCII letters, digits, `.`, `-`, `_`, at most
/// [`MAX_RULE`] characters.
fn rule_id_ok(rule: &str) -> bool {
    !rule.is_empty()
        && rule.len() <= MAX_RULE
        && rule
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
}

/// An RFC 6901 JSON pointer: empty, or `/`-separated tokens where `~` is only `~0` or `~1`.
pub(crate) fn is_json_pointer(p: &str) -> bool {
    if p.is_empty() {
        return true;
    }
    if !p.starts_with('/') || p.len() > MAX_PATH {
        return false;
    }
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return false;
        }
        if c.is_control() {
            return false;
        }
    }
    true
}

/// `info()`'s fields: a name and version of printable ASCII (the name as a rule id's first
/// part), rule ids as in violations — what the module says of itself reaches people's
/// terminals and the decision records.
fn check_info(info: &PolicyInfo) -> Result<(), Failure> {
    let quote = crate::diagnostics::quote;
    let name_ok = !info.name.is_empty()
        && info.name.len() <= MAX_NAME
        && info
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_'));
    if !name_ok {
        return Err(Failure::Malformed(format!(
            "info() name {} is not 1–{MAX_NAME} of a–z, 0–9, `-`, `_`",
            quote(&info.name)
        )));
    }
    let version_ok = !info.version.is_empty()
        && info.version.len() <= MAX_NAME
        && info
            .version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'));
    if !version_ok {
        return Err(Failure::Malformed(format!(
            "info() version {} is not a version (1–{MAX_NAME} of A–Z, a–z, 0–9, `.`, `-`, `+`)",
            quote(&info.version)
        )));
    }
    if info.rules.len() > MAX_RULES {
        return Err(Failure::Malformed(format!(
            "info() lists {} rules, more than {MAX_RULES}",
            info.rules.len()
        )));
    }
    if let Some(bad) = info.rules.iter().find(|r| !rule_id_ok(r)) {
        return Err(Failure::Malformed(format!(
            "info() rule id {} is not of the form `policy.rule-name`",
            quote(bad)
        )));
    }
    Ok(())
}

pub(super) fn check_violation(rule: &str, message: &str, path: &str) -> Result<(), Failure> {
    let quote = crate::diagnostics::quote;
    if !rule_id_ok(rule) {
        return Err(Failure::Malformed(format!(
            "rule id {} is not of the form `policy.rule-name`",
            quote(rule)
        )));
    }
    if !is_json_pointer(path) {
        return Err(Failure::Malformed(format!(
            "path {} is not an RFC 6901 JSON pointer",
            quote(path)
        )));
    }
    if message.trim().is_empty() {
        return Err(Failure::Malformed(format!(
            "violation `{rule}` has no message"
        )));
    }
    if message.chars().count() > MAX_MESSAGE {
        return Err(Failure::Malformed(format!(
            "violation `{rule}` has a message of more than {MAX_MESSAGE} characters"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violation_paths_are_rfc_6901_pointers() {
        for ok in [
            "",
            "/",
            "/spec",
            "/spec/regions/allowed/1",
            "/a~0b",
            "/a~1b",
            "/ü",
        ] {
            assert!(is_json_pointer(ok), "{ok:?}");
        }
        for bad in [
            "spec",
            "spec/regions",
            "/a~2",
            "/a~",
            "/a\u{1b}[2J",
            "/a\nb",
        ] {
            assert!(!is_json_pointer(bad), "{bad:?}");
        }
        assert!(!is_json_pointer(&format!("/{}", "a".repeat(MAX_PATH))));
    }

    #[test]
    fn info_fields_keep_to_their_charset_and_length() {
        let info = |name: &str, version: &str, rules: &[&str]| PolicyInfo {
            name: name.into(),
            version: version.into(),
            rules: rules.iter().map(|r| (*r).to_owned()).collect(),
        };
        assert!(
            check_info(&info(
                "residency",
                "1.0.0+build.1",
                &["residency.outside-zone"]
            ))
            .is_ok()
        );
        for bad in [
            info("", "1.0.0", &[]),
            info("Residency", "1.0.0", &[]),
            info("hostile\u{1b}[2J", "1.0.0", &[]),
            info(&"a".repeat(MAX_NAME + 1), "1.0.0", &[]),
            info("ok", "1.0.0\0", &[]),
            info("ok", "1.0.0", &["Not A Rule"]),
            info("ok", "1.0.0", &["x"; MAX_RULES + 1]),
        ] {
            assert!(
                matches!(check_info(&bad), Err(Failure::Malformed(_))),
                "{:?}",
                bad.name
            );
        }
    }
}
