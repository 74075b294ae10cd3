//! Git servers on 127.0.0.1 for the git-source tests: a repository made with the system
//! `git` (fixed author and dates), served over dumb HTTP by a small static file server
//! (optionally demanding an `Authorization` header) and over `git://` by `git daemon
//! --inetd`, one process per connection of our own listener.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{tool, TestDir};

/// A work repository and its bare copy `repo.git`, which the servers publish.
pub struct GitRepo {
    /// Holds both.
    pub dir: TestDir,
}

impl GitRepo {
    /// An empty repository on branch `main` (and its bare copy once [`GitRepo::commit`] ran).
    pub fn new(name: &str) -> GitRepo {
        let dir = TestDir::new(name);
        let repo = GitRepo { dir };
        repo.git(&["init", "-q", "-b", "main", "work"]);
        repo
    }

    /// The work tree.
    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// The bare repository the servers publish.
    pub fn bare(&self) -> PathBuf {
        self.dir.path().join("repo.git")
    }

    /// `git ARGS` in the test directory, with a fixed identity and date.
    pub fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .current_dir(self.dir.path())
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
            .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
            .stdin(Stdio::null())
            .output()
            .expect("run git (install git)");
        assert!(out.status.success(), "git {args:?}:\n{}", super::show(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Writes `files` into the work tree, commits them on the current branch, and
    /// publishes the work repository's branches and tags to the bare copy (with `git
    /// update-server-info`, for the dumb HTTP server). Returns the commit.
    pub fn commit(&self, message: &str, files: &[(&str, &str)]) -> String {
        for (name, body) in files {
            let p = self.work().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        }
        self.git(&["-C", "work", "add", "-A"]);
        self.git(&["-C", "work", "commit", "-q", "-m", message]);
        self.publish();
        self.git(&["-C", "work", "rev-parse", "HEAD"])
    }

    /// Copies the work repository's refs to the bare one and updates its server info.
    pub fn publish(&self) {
        if !self.bare().exists() {
            self.git(&["init", "-q", "--bare", "-b", "main", "repo.git"]);
        }
        self.git(&[
            "-C",
            "work",
            "push",
            "-q",
            "--force",
            "../repo.git",
            "refs/heads/*:refs/heads/*",
            "refs/tags/*:refs/tags/*",
        ]);
        self.git(&["-C", "repo.git", "update-server-info"]);
    }
}

/// Serves the files under `root` over HTTP/1.0 on 127.0.0.1 (a dumb git server). With
/// `authorization`, a request without exactly that header gets 401. Returns the port.
pub fn serve_static(root: &Path, authorization: Option<String>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    let root = root.to_path_buf();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (root, auth) = (root.clone(), authorization.clone());
            std::thread::spawn(move || answer(stream, &root, auth.as_deref()));
        }
    });
    port
}

fn answer(mut stream: TcpStream, root: &Path, authorization: Option<&str>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    let mut authorized = authorization.is_none();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.trim().split_once(':') {
            if k.eq_ignore_ascii_case("authorization") && Some(v.trim()) == authorization {
                authorized = true;
            }
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let path = path.split('?').next().unwrap_or("");
    let file = root.join(path.trim_start_matches('/'));
    let (status, body) = if !authorized {
        ("401 Unauthorized", Vec::new())
    } else if path.contains("..") || !file.is_file() {
        ("404 Not Found", Vec::new())
    } else {
        ("200 OK", std::fs::read(&file).unwrap_or_default())
    };
    let mut head = format!(
        "HTTP/1.0 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if !authorized {
        head.push_str("WWW-Authenticate: Basic realm=\"git\"\r\n");
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
}

/// Serves the repositories under `base` over `git://` on 127.0.0.1: each connection is
/// handed to `git daemon --inetd`. Returns the port.
pub fn serve_git_daemon(base: &Path) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    let base = base.to_path_buf();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let out = stream.try_clone().unwrap();
            let child = Command::new("git")
                .args(["daemon", "--inetd", "--export-all"])
                .arg(format!("--base-path={}", base.display()))
                .arg(&base)
                .stdin(Stdio::from(std::os::fd::OwnedFd::from(stream)))
                .stdout(Stdio::from(std::os::fd::OwnedFd::from(out)))
                .stderr(Stdio::null())
                .spawn();
            if let Ok(mut child) = child {
                std::thread::spawn(move || child.wait());
            }
        }
    });
    port
}

/// The content of `path`, or a panic naming it.
pub fn read(path: impl AsRef<Path>) -> String {
    let p = path.as_ref();
    let mut s = String::new();
    std::fs::File::open(p)
        .and_then(|mut f| f.read_to_string(&mut s))
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    s
}

/// `git rev-parse HEAD` in a checked-out directory (an image's kept `.git`).
pub fn head_of(dir: &Path) -> String {
    tool("git", &["-C", &dir.to_string_lossy(), "rev-parse", "HEAD"])
        .trim()
        .to_string()
}
