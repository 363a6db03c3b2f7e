//! Applies an nft script as one transaction: one `nft -f -` process, the script on stdin.
//! nft applies all of it or none of it; on failure the error names the script's lines.

use std::path::PathBuf;
use std::process::Stdio;
use tokio::io::AsyncWriteExt;

/// The network namespace programs run in: the caller's, or a named one (a file such as
/// /run/netns/<name>, entered with setns(2) between fork and exec).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Netns(pub Option<PathBuf>);

impl Netns {
    pub fn named(name: &str) -> Self {
        Netns(Some(PathBuf::from("/run/netns").join(name)))
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

/// A rejected transaction.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("running {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("nft rejected the transaction ({status}): {}", describe(.problems, .stderr))]
    Rejected { status: String, problems: Vec<Problem>, stderr: String },
}

fn describe(problems: &[Problem], stderr: &str) -> String {
    if problems.is_empty() {
        return stderr.trim().to_string();
    }
    let parts: Vec<String> = problems.iter().map(|p| format!("line {}: {}: {}", p.line, p.message, p.text)).collect();
    parts.join("; ")
}

/// Finds `/dev/stdin:LINE:COLS: Error: MESSAGE` in nft's output and pairs each with the line
/// of the script (pure).
pub fn parse_errors(stderr: &str, script: &str) -> Vec<Problem> {
    let lines: Vec<&str> = script.lines().collect();
    let mut out = Vec::new();
    for l in stderr.lines() {
        let Some(rest) = l.strip_prefix("/dev/stdin:") else { continue };
        let Some((num, rest)) = rest.split_once(':') else { continue };
        let Ok(line) = num.parse::<usize>() else { continue };
        let message = rest.split_once("Error: ").map(|(_, m)| m).unwrap_or(rest).trim().to_string();
        let text = lines.get(line.wrapping_sub(1)).map(|t| t.trim().to_string()).unwrap_or_default();
        let mut text = text;
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

/// Runs nft.
#[derive(Clone, Debug)]
pub struct Nft {
    pub program: PathBuf,
    pub netns: Netns,
}

impl Nft {
    /// Applies `script` as one transaction.
    pub async fn apply(&self, script: &str) -> Result<(), ApplyError> {
        self.run(&["-f", "-"], script).await.map(|_| ())
    }

    /// Runs nft with `args`, feeding `stdin`; returns stdout.
    pub async fn run(&self, args: &[&str], stdin: &str) -> Result<String, ApplyError> {
        let program = self.program.display().to_string();
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        self.netns.enter_on_exec(&mut cmd);
        let mut child = cmd.spawn().map_err(|source| ApplyError::Spawn { program: program.clone(), source })?;
        let mut pipe = child.stdin.take().expect("piped stdin");
        let input = stdin.as_bytes().to_vec();
        let writer = tokio::spawn(async move {
            let r = pipe.write_all(&input).await;
            drop(pipe);
            r
        });
        let out = child.wait_with_output().await.map_err(|source| ApplyError::Spawn { program: program.clone(), source })?;
        let _ = writer.await;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        Err(ApplyError::Rejected { status: out.status.to_string(), problems: parse_errors(&stderr, stdin), stderr })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_script_line() {
        let script = "add table ip t\nadd rule ip t nope drop\n";
        let stderr = "/dev/stdin:2:15-18: Error: No such file or directory; did you mean chain 'x'?\nadd rule ip t nope drop\n              ^^^^\n";
        let p = parse_errors(stderr, script);
        assert_eq!(p, vec![Problem {
            line: 2,
            message: "No such file or directory; did you mean chain 'x'?".into(),
            text: "add rule ip t nope drop".into()
        }]);
        let e = ApplyError::Rejected { status: "exit status: 1".into(), problems: p, stderr: stderr.into() };
        assert!(e.to_string().contains("line 2: No such file or directory; did you mean chain 'x'?: add rule ip t nope drop"), "{e}");
    }
}
