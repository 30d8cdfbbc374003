//! Compiling a policy module under a budget of its own.
//!
//! Cranelift's cost is not linear in a module's size: a 260 KB function whose locals stay
//! live across thousands of blocks takes minutes and gigabytes to compile. Fuel and the
//! wall-clock limit only apply once a module runs, so compilation happens in a child process
//! (this same binary, `tenancy __compile-policy`) with a CPU-time and a memory budget: the
//! child's data segment is capped by `RLIMIT_DATA`, the parent samples its CPU time every
//! few milliseconds and kills it past the budget, and a wall-clock deadline backs both up. A
//! module over budget is a [`Failure::CompileBudget`], never a hang.
//!
//! The compiled artifact is cached on disk next to what it cost (CPU time, peak memory), and
//! a cache hit is judged against the budget of the run that uses it: a bomb that once
//! compiled under a generous budget is refused under a small one, cache or not.

use super::host::{Failure, wasm_text};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The subcommand `main` hands to [`child_main`] (hidden; never typed by people).
pub const CHILD_ARG: &str = "__compile-policy";

/// The budget for compiling one module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// CPU time of the compilation, all its threads together.
    pub cpu_ms: u64,
    /// The compiler's memory (its data segment: heap and anonymous mappings).
    pub memory_mib: u64,
}

/// What compiling a module cost, as measured when it was compiled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cost {
    pub cpu_ms: u64,
    /// Peak resident memory of the compiler process, in KiB.
    pub(crate) peak_kib: u64,
    /// Whether this run took the artifact from the on-disk cache.
    #[serde(skip)]
    pub cached: bool,
}

impl Cost {
    /// Refuse a cost over `budget`, whether just measured or recorded in the cache.
    pub fn check(&self, budget: Budget) -> Result<(), Failure> {
        let from = if self.cached {
            " (as measured when it was compiled and cached)"
        } else {
            ""
        };
        if self.cpu_ms > budget.cpu_ms {
            return Err(Failure::CompileBudget(format!(
                "compiling it took {} ms of CPU time{from}, more than its budget of {} ms",
                self.cpu_ms, budget.cpu_ms
            )));
        }
        if self.peak_kib > budget.memory_mib.saturating_mul(1024) {
            return Err(Failure::CompileBudget(format!(
                "compiling it took {} MiB of memory{from}, more than its budget of {} MiB",
                self.peak_kib.div_ceil(1024),
                budget.memory_mib
            )));
        }
        Ok(())
    }
}

static COMPILER: OnceLock<PathBuf> = OnceLock::new();

/// Use `exe` (a `tenancy` binary) as the compiler. For programs that embed the library —
/// the integration tests — whose own executable is not `tenancy`; set before the first
/// compilation. `TENANCY_POLICY_COMPILER` does the same from the environment.
pub fn use_compiler(exe: impl Into<PathBuf>) {
    let _ = COMPILER.set(exe.into());
}

fn compiler() -> PathBuf {
    if let Some(exe) = COMPILER.get() {
        return exe.clone();
    }
    if let Some(exe) = std::env::var_os("TENANCY_POLICY_COMPILER") {
        return exe.into();
    }
    // /proc/self/exe still runs the binary this process started from after an upgrade
    // replaced the file on disk.
    if cfg!(target_os = "linux") {
        return PathBuf::from("/proc/self/exe");
    }
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("tenancy"))
}

/// Where compiled modules are kept: `$TENANCY_CACHE_DIR/policies`, else
/// `$XDG_CACHE_HOME/tenancy/policies`, else `~/.cache/tenancy/policies`;
/// `TENANCY_COMPILE_CACHE=off` keeps nothing.
pub(crate) fn cache_dir() -> Option<PathBuf> {
    if std::env::var("TENANCY_COMPILE_CACHE").is_ok_and(|v| v == "off") {
        return None;
    }
    let base = std::env::var_os("TENANCY_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("tenancy")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/tenancy")))?;
    Some(base.join("policies"))
}

/// The cache keeps at most this much; the least recently written artifacts go first.
const CACHE_BYTES: u64 = 1 << 30;

/// A stable digest of everything that makes an artifact loadable by `engine` (Wasmtime
/// version, target, compiler settings).
fn engine_key(engine: &Engine) -> String {
    use sha2::Digest;
    use std::hash::{Hash, Hasher};
    struct Sha(sha2::Sha256);
    impl Hasher for Sha {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut h = Sha(sha2::Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    hex::encode(&h.0.finalize()[..12])
}

/// Compile `bytes` (already verified to have digest `digest`) for `engine`, within `budget`.
pub fn compile(
    engine: &Engine,
    bytes: &[u8],
    digest: &str,
    budget: Budget,
) -> Result<(Component, Cost), Failure> {
    let dir = cache_dir();
    let key = format!("{digest}-{}", engine_key(engine));
    if let Some(dir) = &dir
        && let Some(hit) = cached(engine, dir, &key, budget)?
    {
        return Ok(hit);
    }
    // Scratch files live in the cache directory (so an artifact is published by rename) or,
    // without a cache, in a private temporary directory.
    let scratch = match &dir {
        Some(dir) if std::fs::create_dir_all(dir).is_ok() => {
            tempfile::Builder::new().prefix(".compile-").tempdir_in(dir)
        }
        _ => tempfile::Builder::new()
            .prefix("tenancy-compile-")
            .tempdir(),
    }
    .map_err(|e| Failure::Compile(format!("cannot create a scratch directory: {e}")))?;
    let input = scratch.path().join("module.wasm");
    let output = scratch.path().join("module.cwasm");
    let log = scratch.path().join("compiler.log");
    std::fs::write(&input, bytes)
        .map_err(|e| Failure::Compile(format!("cannot write {}: {e}", input.display())))?;
    let cost = run_child(&input, &output, &log, budget)?;
    // A child that ended just past its budget is over it all the same.
    cost.check(budget)?;
    let artifact = std::fs::read(&output)
        .map_err(|e| Failure::Compile(format!("the compiler left no artifact: {e}")))?;
    // SAFETY: the artifact was produced just now by this binary's own compiler, from bytes
    // verified against the bundle's digest; it is not input from anyone else.
    let component = unsafe { Component::deserialize(engine, &artifact) }
        .map_err(|e| Failure::Compile(wasm_text(&e)))?;
    if let Some(dir) = &dir {
        store(dir, &key, &output, &cost);
    }
    Ok((component, cost))
}

/// An artifact from the cache, judged against `budget` by what it cost to make.
fn cached(
    engine: &Engine,
    dir: &Path,
    key: &str,
    budget: Budget,
) -> Result<Option<(Component, Cost)>, Failure> {
    let meta = dir.join(format!("{key}.json"));
    let Some(mut cost) = std::fs::read(&meta)
        .ok()
        .and_then(|b| serde_json::from_slice::<Cost>(&b).ok())
    else {
        return Ok(None);
    };
    cost.cached = true;
    cost.check(budget)?;
    let path = dir.join(format!("{key}.cwasm"));
    let Ok(artifact) = std::fs::read(&path) else {
        return Ok(None);
    };
    // SAFETY: the cache directory holds only artifacts this binary compiled and published
    // by rename (never a partial write); it is as trusted as the binary itself — the same
    // model as Wasmtime's own compilation cache.
    match unsafe { Component::deserialize(engine, &artifact) } {
        Ok(component) => Ok(Some((component, cost))),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "discarding an unusable cached policy artifact");
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(&meta);
            Ok(None)
        }
    }
}

/// Publish an artifact and its cost (artifact first: a cost file never names a missing one),
/// then keep the directory within [`CACHE_BYTES`]. Failures only cost a recompilation.
fn store(dir: &Path, key: &str, artifact: &Path, cost: &Cost) {
    let meta_tmp = artifact.with_extension("json");
    let written = std::fs::rename(artifact, dir.join(format!("{key}.cwasm"))).and_then(|()| {
        std::fs::write(&meta_tmp, serde_json::to_vec(cost).unwrap_or_default())?;
        std::fs::rename(&meta_tmp, dir.join(format!("{key}.json")))
    });
    if let Err(e) = written {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot cache a compiled policy");
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut artifacts: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((m.modified().ok()?, m.len(), e.path()))
        })
        .collect();
    let mut total: u64 = artifacts.iter().map(|a| a.1).sum();
    artifacts.sort();
    for (_, len, path) in artifacts {
        if total <= CACHE_BYTES {
            break;
        }
        let _ = std::fs::remove_file(path.with_extension("json"));
        let _ = std::fs::remove_file(&path);
        total -= len;
    }
}

/// How often the parent samples the child's CPU time.
const SAMPLE: Duration = Duration::from_millis(5);

/// Run the compiler child and wait for it within `budget`.
fn run_child(input: &Path, output: &Path, log: &Path, budget: Budget) -> Result<Cost, Failure> {
    let exe = compiler();
    let log_file = std::fs::File::create(log)
        .map_err(|e| Failure::Compile(format!("cannot create {}: {e}", log.display())))?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get().min(4))
        .unwrap_or(1);
    let started = Instant::now();
    let child = std::process::Command::new(&exe)
        // The request travels in the environment, so that a binary which is not `tenancy`
        // (a test harness) sees one argument that matches nothing, and does nothing.
        .arg(CHILD_ARG)
        .env("TENANCY_COMPILE_IN", input)
        .env("TENANCY_COMPILE_OUT", output)
        .env("TENANCY_COMPILE_CPU_MS", budget.cpu_ms.to_string())
        .env("TENANCY_COMPILE_MIB", budget.memory_mib.to_string())
        // Thread stacks and malloc arenas count against the memory budget: bound both, so a
        // many-core machine does not need a bigger budget than a small one.
        .env("RAYON_NUM_THREADS", threads.to_string())
        .env("MALLOC_ARENA_MAX", "2")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log_file)
        .spawn()
        .map_err(|e| {
            Failure::Compile(format!(
                "cannot start the policy compiler {}: {e}",
                exe.display()
            ))
        })?;
    let pid = child.id() as libc::pid_t;
    // Past the CPU budget the child is killed; the wall-clock deadline catches a child that
    // is not using CPU at all (stopped, or starved), generously.
    let deadline =
        started + Duration::from_millis(budget.cpu_ms.saturating_mul(4)) + Duration::from_secs(10);
    let (status, usage, killed) = loop {
        if let Some((status, usage)) = reap(pid, false) {
            break (status, usage, None);
        }
        let over = if cpu_ms_of(pid).is_some_and(|ms| ms > budget.cpu_ms) {
            Some(format!(
                "compiling it took more than its budget of {} ms of CPU time (a compile bomb?)",
                budget.cpu_ms
            ))
        } else if Instant::now() > deadline {
            Some(format!(
                "compiling it did not finish within {} s",
                (deadline - started).as_secs()
            ))
        } else {
            None
        };
        if let Some(reason) = over {
            // SAFETY: `pid` is our own child, not yet reaped, so the id cannot have been reused.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let (status, usage) = reap(pid, true).unwrap_or_default();
            break (status, usage, Some(reason));
        }
        std::thread::sleep(SAMPLE);
    };
    let cost = Cost {
        cpu_ms: usage.0,
        peak_kib: usage.1,
        cached: false,
    };
    if let Some(reason) = killed {
        return Err(Failure::CompileBudget(reason));
    }
    let said = read_log(log);
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        return Ok(cost);
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == CHILD_INVALID {
        return Err(Failure::Compile(said));
    }
    if said.contains("memory allocation of") {
        return Err(Failure::CompileBudget(format!(
            "compiling it needed more than its budget of {} MiB of memory",
            budget.memory_mib
        )));
    }
    if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGXCPU {
        return Err(Failure::CompileBudget(format!(
            "compiling it took more than its budget of {} ms of CPU time (a compile bomb?)",
            budget.cpu_ms
        )));
    }
    Err(Failure::Compile(format!(
        "the policy compiler {} failed ({}){}",
        exe.display(),
        describe(status),
        if said.is_empty() {
            ". Programs embedding the library must point TENANCY_POLICY_COMPILER at a tenancy binary".to_owned()
        } else {
            format!(": {said}")
        }
    )))
}

/// Wait for `pid` (blocking or not); its exit status and (CPU ms, peak RSS KiB).
fn reap(pid: libc::pid_t, block: bool) -> Option<(i32, (u64, u64))> {
    let mut status = 0;
    // SAFETY: plain syscall on our own child with valid out-pointers.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let flags = if block { 0 } else { libc::WNOHANG };
    let r = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
    if r != pid {
        return None;
    }
    let ms = |t: libc::timeval| t.tv_sec as u64 * 1000 + t.tv_usec as u64 / 1000;
    let cpu = ms(usage.ru_utime) + ms(usage.ru_stime);
    Some((status, (cpu, usage.ru_maxrss.max(0) as u64)))
}

/// A running process's CPU time so far (Linux: /proc/PID/stat; elsewhere unknown, and the
/// child's RLIMIT_CPU is the bound).
fn cpu_ms_of(pid: libc::pid_t) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some((utime + stime) * 1000 / hz)
}

fn describe(status: i32) -> String {
    if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("exit status {}", libc::WEXITSTATUS(status))
    }
}

/// The child's last words, bounded.
fn read_log(log: &Path) -> String {
    let mut text = String::new();
    if let Ok(f) = std::fs::File::open(log) {
        let _ = f.take(8192).read_to_string(&mut text);
    }
    // The compiler quotes the module (export names, its name section): printable.
    crate::diagnostics::printable(text.trim()).into_owned()
}

/// The child's exit status for a module that is not valid WebAssembly (its log says why).
const CHILD_INVALID: i32 = 3;

/// `tenancy __compile-policy`: compile the module named by the environment into an artifact
/// for [`super::host::engine_config`]'s engine, under the limits it is given. Returns the
/// process exit code.
pub fn child_main() -> i32 {
    let var = |name: &str| std::env::var_os(name).map(PathBuf::from);
    let (Some(input), Some(output)) = (var("TENANCY_COMPILE_IN"), var("TENANCY_COMPILE_OUT"))
    else {
        eprintln!("{CHILD_ARG} is tenancy's internal policy compiler; it is not a command");
        return 2;
    };
    let number = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let cpu_ms = number("TENANCY_COMPILE_CPU_MS").unwrap_or(super::bundle::MAX_COMPILE_MS);
    let mib = number("TENANCY_COMPILE_MIB").unwrap_or(super::bundle::MAX_COMPILE_MIB);
    // The kernel's own bounds, in case the parent is gone: CPU seconds (SIGXCPU, then SIGKILL
    // a second later) and the data segment (malloc fails, the process aborts).
    let cpu_s = cpu_ms.div_ceil(1000) + 1;
    set_limit(libc::RLIMIT_CPU, cpu_s, cpu_s + 1);
    let bytes = mib.saturating_mul(1 << 20);
    set_limit(libc::RLIMIT_DATA, bytes, bytes);
    let module = match std::fs::read(&input) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("cannot read {}: {e}", input.display());
            return 2;
        }
    };
    let engine = match Engine::new(&super::host::engine_config(false)) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot set up the compiler: {e:#}");
            return 2;
        }
    };
    match engine.precompile_component(&module) {
        Ok(artifact) => match std::fs::write(&output, artifact) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("cannot write {}: {e}", output.display());
                2
            }
        },
        Err(e) => {
            let text: String = format!("{e:#}").chars().take(4096).collect();
            eprintln!("{text}");
            CHILD_INVALID
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
type Resource = libc::c_int;

fn set_limit(resource: Resource, soft: u64, hard: u64) {
    let limit = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: plain syscall with a valid pointer; failure leaves the parent's bounds.
    unsafe { libc::setrlimit(resource, &limit) };
}
