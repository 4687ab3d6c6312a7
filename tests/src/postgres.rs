//! A PostgreSQL cluster of the test's own, on a temporary directory and a free port, that the
//! test may stop and start: never the machine's shared server.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// A private cluster, stopped (immediately) and removed when dropped.
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

impl Cluster {
    /// `initdb` and start on a free port. Needs the server binaries (Debian's
    /// `/usr/lib/postgresql/<version>/bin`); run as user `postgres` when the tests run as root.
    pub fn start() -> Self {
        let bin = server_binaries();
        let dir = tempfile::Builder::new().prefix("e2e-pg-").tempdir().unwrap();
        if is_root() {
            let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().unwrap();
            assert!(status.success(), "chown of the cluster directory");
        }
        let data = dir.path().join("data");
        run(&bin, "initdb", &["-D", path(&data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]);
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cluster = Cluster { dir, bin, port };
        cluster.start_again();
        cluster
    }

    /// The URL of database `postgres` on this cluster.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once, as a crash or an operator's `pg_ctl stop -m immediate` would.
    pub fn stop(&self) {
        run(&self.bin, "pg_ctl", &["-D", path(&self.data()), "-m", "immediate", "-w", "stop"]);
    }

    /// Starts the (stopped) server again on the same port.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            self.port,
            path(self.dir.path())
        );
        let log = self.dir.path().join("server.log");
        run(&self.bin, "pg_ctl", &["-D", path(&self.data()), "-o", &options, "-l", path(&log), "-w", "start"]);
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = command(&self.bin, "pg_ctl", &["-D", path(&self.data()), "-m", "immediate", "-w", "stop"]).output();
    }
}

fn path(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|output| output.stdout.starts_with(b"0\n"))
}

/// The newest installed server's binaries.
fn server_binaries() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("the PostgreSQL server binaries (/usr/lib/postgresql/<version>/bin) are needed")
        .filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin")))
        .filter(|bin| bin.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop().expect("no pg_ctl under /usr/lib/postgresql")
}

fn command(bin: &Path, program: &str, args: &[&str]) -> Command {
    let program = bin.join(program);
    if is_root() {
        // initdb and postgres refuse to run as root.
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program).args(args);
        command
    } else {
        let mut command = Command::new(program);
        command.args(args);
        command
    }
}

fn run(bin: &Path, program: &str, args: &[&str]) {
    let output = command(bin, program, args).output().unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
