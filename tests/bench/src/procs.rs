//! Child processes under test, and what /proc says about them (CPU time, RSS).

use std::{
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A process the bench started; killed when dropped.
pub struct Proc {
    pub name: &'static str,
    pub addr: SocketAddr,
    child: Child,
}

impl Proc {
    pub fn spawn(name: &'static str, mut command: Command, addr: SocketAddr) -> Self {
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit());
        let child = command.spawn().unwrap_or_else(|error| panic!("cannot start {name}: {error}"));
        Proc { name, addr, child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time used so far (user + system).
    pub fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the command name (which may hold spaces): state is the first, then
        // utime and stime are the 12th and 13th.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |index: usize| fields.get(index).and_then(|value| value.parse::<u64>().ok()).unwrap_or_default();
        Duration::from_secs_f64((ticks(11) + ticks(12)) as f64 / clock_ticks() as f64)
    }

    /// Resident memory in MiB.
    pub fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.split_whitespace().next())
            .and_then(|kib| kib.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    }

    /// Waits until the port accepts connections.
    pub fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(self.addr).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited at start: {status}", self.name);
            }
            assert!(Instant::now() < deadline, "{} did not listen on {}", self.name, self.addr);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `getconf CLK_TCK` (100 on every Linux we know, asked anyway).
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|output| String::from_utf8_lossy(&output.stdout).trim().parse().ok())
            .unwrap_or(100)
    })
}

/// A free loopback port.
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr")
}

/// A binary of the workspace built in the same profile as this one.
pub fn sibling(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let path = exe.with_file_name(name);
    assert!(path.exists(), "{} is missing: build it first (cargo build --release --workspace --bins)", path.display());
    path
}

/// CPU used by each process between two readings, in cores (1.0 = one core busy).
pub struct CpuMeter<'a> {
    procs: Vec<(&'a Proc, Duration)>,
    started: Instant,
}

impl<'a> CpuMeter<'a> {
    pub fn start(procs: &[&'a Proc]) -> Self {
        CpuMeter { procs: procs.iter().map(|proc| (*proc, proc.cpu())).collect(), started: Instant::now() }
    }

    pub fn stop(self) -> Vec<(&'static str, f64)> {
        let elapsed = self.started.elapsed().as_secs_f64();
        self.procs.iter().map(|(proc, before)| (proc.name, (proc.cpu() - *before).as_secs_f64() / elapsed)).collect()
    }
}
