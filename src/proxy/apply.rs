//! Applies an nft script as one transaction through libnftables, the library the `nft`
//! program is built on (libnftables.so.1, installed with it), loaded at run time. Each `Nft`
//! has a few worker threads (one per core, for the parts of a full sync parsed side by side);
//! each enters the proxy's network namespace once and keeps one nftables context while changes
//! come (closed after `IDLE_CLOSE` without one), whose netlink socket stays open between
//! transactions: running the `nft` program per change costs
//! a process start and, after element deletions, a socket release that waits for the kernel to
//! free them, about 20 ms per change at 10,000 Services (15 ms with a new context per change),
//! against well under a millisecond. After each transaction the context drops its copy of the
//! ruleset (3 MB at 1,000 Services), which the next one fetches again anyway. nft applies all
//! of a script or none of it; on failure the error names the script's lines.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// The network namespace programs run in: the caller's, or a named one (a file such as
/// /run/netns/<name>, entered with setns(2) between fork and exec).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Netns(pub Option<PathBuf>);

impl Netns {
    pub fn named(name: &str) -> Self {
        Netns(Some(PathBuf::from("/run/netns").join(name)))
    }

    /// Moves the calling thread into the namespace (a no-op for the caller's own). The one
    /// setns of a running thread (the tests' namespaces use it too); `enter_on_exec` is the
    /// forked child's, which may only make async-signal-safe calls.
    pub fn enter_here(&self) -> std::io::Result<()> {
        let Some(path) = &self.0 else { return Ok(()) };
        let file = std::fs::File::open(path)?;
        // SAFETY: setns on a valid fd; it only changes this thread's network namespace.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Makes `cmd` enter the namespace before exec.
    pub fn enter_on_exec(&self, cmd: &mut tokio::process::Command) {
        let Some(path) = self.0.clone() else { return };
        // SAFETY: the hook runs in the forked child and only makes async-signal-safe syscalls
        // (open, setns, close) on a path prepared before the fork.
        let cpath = std::ffi::CString::new(path.into_os_string().into_encoded_bytes()).expect("netns path without NUL");
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(cpath.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let rc = libc::setns(fd, libc::CLONE_NEWNET);
                let err = std::io::Error::last_os_error();
                libc::close(fd);
                if rc != 0 {
                    return Err(err);
                }
                Ok(())
            });
        }
    }
}

/// One line of the script nft complained about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line in the script.
    pub line: usize,
    pub message: String,
    /// The script's line itself.
    pub text: String,
}

/// A transaction that was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("nftables library: {0}")]
    Library(String),
    #[error("nft rejected the transaction: {}", describe(.problems, .stderr))]
    Rejected { problems: Vec<Problem>, stderr: String },
}

fn describe(problems: &[Problem], stderr: &str) -> String {
    if problems.is_empty() {
        return stderr.trim().to_string();
    }
    let parts: Vec<String> = problems.iter().map(|p| format!("line {}: {}: {}", p.line, p.message, p.text)).collect();
    parts.join("; ")
}

/// Finds `SOURCE:LINE:COLS: Error: MESSAGE` in nft's error output and pairs each with the
/// line of the script (pure).
pub fn parse_errors(stderr: &str, script: &str, source: &str) -> Vec<Problem> {
    let lines: Vec<&str> = script.lines().collect();
    let prefix = format!("{source}:");
    let mut out = Vec::new();
    for l in stderr.lines() {
        let Some(rest) = l.strip_prefix(&prefix) else { continue };
        let Some((num, rest)) = rest.split_once(':') else { continue };
        let Ok(line) = num.parse::<usize>() else { continue };
        let message = rest.split_once("Error: ").map(|(_, m)| m).unwrap_or(rest).trim().to_string();
        let mut text = lines.get(line.wrapping_sub(1)).map(|t| t.trim().to_string()).unwrap_or_default();
        if text.len() > 300 {
            let mut end = 300;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push_str("...");
        }
        out.push(Problem { line, message, text });
    }
    out
}

type CtxNew = unsafe extern "C" fn(u32) -> *mut c_void;
type CtxFree = unsafe extern "C" fn(*mut c_void);
type CtxBuffer = unsafe extern "C" fn(*mut c_void) -> c_int;
type CtxGetBuffer = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type RunFromFile = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;
type RunFromBuffer = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;
type SetDryRun = unsafe extern "C" fn(*mut c_void, bool);

const LIBRARY: &str = "libnftables.so.1";

/// An nftables context: the library's functions and one `struct nft_ctx`. Used by one thread.
struct Context {
    ctx: *mut c_void,
    free: CtxFree,
    get_output: CtxGetBuffer,
    get_error: CtxGetBuffer,
    run_from_file: RunFromFile,
    run_from_buffer: RunFromBuffer,
    set_dry_run: SetDryRun,
    _library: libloading::Library,
}

impl Context {
    fn open() -> Result<Context, String> {
        // SAFETY: loading the system's libnftables runs its initialisers, which have no
        // requirements; the symbols are looked up with the signatures of its public header
        // (nftables/libnftables.h) and stay valid while `_library` is held.
        unsafe {
            let library = libloading::Library::new(LIBRARY).map_err(|e| format!("loading {LIBRARY} (package libnftables1): {e}"))?;
            let new: CtxNew = symbol(&library, "nft_ctx_new")?;
            let free: CtxFree = symbol(&library, "nft_ctx_free")?;
            let buffer_output: CtxBuffer = symbol(&library, "nft_ctx_buffer_output")?;
            let buffer_error: CtxBuffer = symbol(&library, "nft_ctx_buffer_error")?;
            let get_output: CtxGetBuffer = symbol(&library, "nft_ctx_get_output_buffer")?;
            let get_error: CtxGetBuffer = symbol(&library, "nft_ctx_get_error_buffer")?;
            let run_from_file: RunFromFile = symbol(&library, "nft_run_cmd_from_filename")?;
            let run_from_buffer: RunFromBuffer = symbol(&library, "nft_run_cmd_from_buffer")?;
            let set_dry_run: SetDryRun = symbol(&library, "nft_ctx_set_dry_run")?;
            let ctx = new(0);
            if ctx.is_null() {
                return Err("nft_ctx_new failed".into());
            }
            if buffer_output(ctx) != 0 || buffer_error(ctx) != 0 {
                free(ctx);
                return Err("nft_ctx_buffer_output/error failed".into());
            }
            Ok(Context { ctx, free, get_output, get_error, run_from_file, run_from_buffer, set_dry_run, _library: library })
        }
    }

    /// Runs `script` as one transaction; returns nft's output.
    fn run(&self, script: &str) -> Result<String, ApplyError> {
        // nft reads the script from a file, so its errors carry line numbers
        let file = script_file(script).map_err(|e| ApplyError::Library(format!("writing the script to a memfd: {e}")))?;
        let source = format!("/proc/self/fd/{}", file.as_raw_fd());
        let path = CString::new(source.clone()).expect("no NUL in a path made of digits");
        // SAFETY: ctx is a live context used by this thread only; the buffers it returns stay
        // valid until the next run on it and are copied before that.
        let (rc, output, errors) = unsafe {
            let rc = (self.run_from_file)(self.ctx, path.as_ptr());
            (rc, c_text((self.get_output)(self.ctx)), c_text((self.get_error)(self.ctx)))
        };
        drop(file);
        if rc == 0 {
            return Ok(output);
        }
        Err(ApplyError::Rejected { problems: parse_errors(&errors, script, &source), stderr: errors })
    }

    /// Drops the context's copy of the ruleset, keeping its socket. libnftables releases its
    /// cache after a dry run (`nft -c`); an empty one costs about 0.15 ms.
    fn release_cache(&self) {
        // SAFETY: ctx is a live context used by this thread only; the empty command is a
        // NUL-terminated string.
        unsafe {
            (self.set_dry_run)(self.ctx, true);
            (self.run_from_buffer)(self.ctx, c"".as_ptr());
            (self.set_dry_run)(self.ctx, false);
        }
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: the context is not used after this.
        unsafe { (self.free)(self.ctx) };
    }
}

/// A function of the library, by name.
///
/// # Safety
/// `T` must be the function's type as the library's header declares it.
unsafe fn symbol<T: Copy>(library: &libloading::Library, name: &str) -> Result<T, String> {
    let mut c_name = name.as_bytes().to_vec();
    c_name.push(0);
    // SAFETY: the caller vouches for T.
    unsafe { library.get::<T>(&c_name) }.map(|f| *f).map_err(|e| format!("{LIBRARY}: {name}: {e}"))
}

fn c_text(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: libnftables returns NUL-terminated buffers.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// An anonymous in-memory file holding the script.
fn script_file(script: &str) -> std::io::Result<OwnedFd> {
    // SAFETY: memfd_create with a static name; the fd is owned from here on.
    let fd = unsafe { libc::memfd_create(c"nodelet-nft".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just created and is owned by nothing else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = std::fs::File::from(owned);
    file.write_all(script.as_bytes())?;
    Ok(file.into())
}

/// A worker idle this long closes its context; once all are closed the library is unloaded
/// (its code, libgmp's and libnftnl's, about 1.5 MB resident, and the context's heap). Changes
/// come in bursts; opening again costs about 1 ms, against a 50 ms debounce.
const IDLE_CLOSE: std::time::Duration = std::time::Duration::from_secs(2);

struct Job {
    script: String,
    reply: tokio::sync::oneshot::Sender<Result<String, ApplyError>>,
}

/// Applies scripts in a network namespace, each on one of a few threads.
pub struct Nft {
    workers: Vec<mpsc::Sender<Job>>,
}

impl Nft {
    /// Starts `threads` workers: each enters `netns` and opens a context, or this fails saying
    /// why.
    pub fn new(netns: &Netns, threads: usize) -> Result<Nft, ApplyError> {
        Self::closing_after(netns, threads, IDLE_CLOSE)
    }

    /// As `new`, each worker closing its context after `idle` without a transaction.
    fn closing_after(netns: &Netns, threads: usize, idle: std::time::Duration) -> Result<Nft, ApplyError> {
        let workers = (0..threads.max(1)).map(|i| start_worker(netns, i, idle)).collect::<Result<_, _>>()?;
        Ok(Nft { workers })
    }

    pub fn threads(&self) -> usize {
        self.workers.len()
    }

    /// Applies `script` as one transaction.
    pub async fn apply(&self, script: &str) -> Result<(), ApplyError> {
        self.run(script).await.map(|_| ())
    }

    /// Runs `script` (commands or listings); returns nft's output.
    pub async fn run(&self, script: &str) -> Result<String, ApplyError> {
        submit(&self.workers[0], script.to_string()).await
    }

    /// Applies the scripts side by side, each as a transaction of its own (the kernel commits
    /// them one after another; the parsing before that is what runs in parallel).
    pub async fn apply_all(&self, scripts: &[String]) -> Result<(), ApplyError> {
        let runs = scripts.iter().filter(|s| !s.is_empty()).enumerate().map(|(i, s)| submit(&self.workers[i % self.workers.len()], s.clone()));
        for result in futures::future::join_all(runs).await {
            result?;
        }
        Ok(())
    }
}

fn start_worker(netns: &Netns, index: usize, idle: std::time::Duration) -> Result<mpsc::Sender<Job>, ApplyError> {
    let (jobs, queue) = mpsc::channel::<Job>();
    let (ready_tx, ready) = mpsc::channel();
    let netns = netns.clone();
    std::thread::Builder::new()
        .name(format!("nftables-{index}"))
        .spawn(move || {
            let opened = netns
                .enter_here()
                .map_err(|e| format!("entering network namespace {}: {e}", netns.0.as_deref().unwrap_or(Path::new("")).display()))
                .and_then(|()| Context::open());
            let mut context = match opened {
                Ok(c) => Some(c),
                Err(e) => return drop(ready_tx.send(Err(e))),
            };
            let _ = ready_tx.send(Ok(()));
            // ends when the Nft (the sender) is dropped
            loop {
                let job = match &context {
                    Some(_) => match queue.recv_timeout(idle) {
                        Ok(job) => job,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            context = None;
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    },
                    None => match queue.recv() {
                        Ok(job) => job,
                        Err(_) => break,
                    },
                };
                if context.is_none() {
                    match Context::open() {
                        Ok(c) => context = Some(c),
                        Err(e) => {
                            let _ = job.reply.send(Err(ApplyError::Library(e)));
                            continue;
                        }
                    }
                }
                let Some(open) = &context else { continue };
                let _ = job.reply.send(open.run(&job.script));
                open.release_cache();
            }
        })
        .map_err(|e| ApplyError::Library(format!("starting an nftables thread: {e}")))?;
    match ready.recv() {
        Ok(Ok(())) => Ok(jobs),
        Ok(Err(e)) => Err(ApplyError::Library(e)),
        Err(_) => Err(ApplyError::Library("an nftables thread ended at start".into())),
    }
}

async fn submit(worker: &mpsc::Sender<Job>, script: String) -> Result<String, ApplyError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    worker.send(Job { script, reply }).map_err(|_| ApplyError::Library("the nftables thread has ended".into()))?;
    answer.await.map_err(|_| ApplyError::Library("the nftables thread has ended".into()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_script_line() {
        let script = "add table ip t\nadd rule ip t nope drop\n";
        let stderr = "/proc/self/fd/9:2:15-18: Error: No such file or directory; did you mean chain 'x'?\nadd rule ip t nope drop\n              ^^^^\n";
        let p = parse_errors(stderr, script, "/proc/self/fd/9");
        assert_eq!(p, vec![Problem { line: 2, message: "No such file or directory; did you mean chain 'x'?".into(), text: "add rule ip t nope drop".into() }]);
        let e = ApplyError::Rejected { problems: p, stderr: stderr.into() };
        assert!(e.to_string().contains("line 2: No such file or directory; did you mean chain 'x'?: add rule ip t nope drop"), "{e}");
    }

    fn library_mapped() -> bool {
        std::fs::read_to_string("/proc/self/maps").unwrap().contains("libnftables")
    }

    #[tokio::test]
    async fn an_idle_worker_unloads_the_library_and_opens_it_again() {
        // Needs the system's libnftables; an empty script touches no table.
        let Ok(nft) = Nft::closing_after(&Netns::default(), 1, std::time::Duration::from_millis(100)) else { return };
        nft.apply("").await.unwrap();
        assert!(library_mapped());
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert!(!library_mapped(), "closed after the idle time");
        nft.apply("").await.unwrap();
        assert!(library_mapped(), "opened again for the next transaction");
    }
}
