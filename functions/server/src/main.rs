//! `registry-server`: the whole registry as one local process (all four route groups).

use clap::Parser;
use registry::config::{Config, Env};

/// mimalloc rather than the system allocator: a warm read makes a couple of dozen small
/// allocations, and glibc's malloc and free were a sixth of its instructions.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's option numbers (`mi_option_t` in the `mimalloc.h` that libmimalloc-sys 0.1.49
/// builds, mimalloc 3).
mod mimalloc_option {
    pub const ARENA_EAGER_COMMIT: std::ffi::c_int = 4;
    pub const PURGE_DELAY: std::ffi::c_int = 15;
}

unsafe extern "C" {
    /// From the mimalloc library that the `mimalloc` crate links.
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// Makes mimalloc hand freed memory back to the system at once, unless the operator set the
/// option in the environment. With its defaults (arenas committed eagerly, purges delayed
/// 10 ms and only done when the allocator is next busy) the server held 330 MiB after reading
/// every package of a 10k-version directory once, against a heap that never exceeded 55 MB;
/// with these, about 100 MiB (issue 19, docs/scale.md).
///
/// It runs as a constructor, before Rust's runtime starts, because mimalloc reserves its first
/// arena at the first allocation, and an option set later does not reach that arena.
extern "C" fn return_freed_memory_promptly() {
    for (option, variable, value) in [
        (
            mimalloc_option::ARENA_EAGER_COMMIT,
            "MIMALLOC_ARENA_EAGER_COMMIT",
            0,
        ),
        (mimalloc_option::PURGE_DELAY, "MIMALLOC_PURGE_DELAY", 0),
    ] {
        if std::env::var_os(variable).is_none() {
            // SAFETY: mi_option_set only stores the value; any option number and value is valid.
            unsafe { mi_option_set(option, value) };
        }
    }
}

/// Flags override the environment variables of the same setting (README, "Configuration").
#[derive(Parser, Debug)]
#[command(version, about = "npm-compatible registry, local server")]
struct Flags {
    /// Address to listen on [env: REGISTRY_LISTEN, default 127.0.0.1:4873].
    #[arg(long)]
    listen: Option<String>,
    /// Base URL clients use, for dist.tarball [env: REGISTRY_PUBLIC_URL].
    #[arg(long)]
    public_url: Option<String>,
    /// Storage backend, local or aws [env: REGISTRY_STORAGE].
    #[arg(long)]
    storage: Option<String>,
    /// Data directory of the local backend [env: REGISTRY_DATA_DIR, default ./data].
    #[arg(long)]
    data: Option<String>,
    /// Auth mode, open or github [env: REGISTRY_AUTH].
    #[arg(long)]
    auth: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Serve the registry (the default).
    Serve,
    /// Delete tarballs no live version refers to (left by a publish that crashed before its
    /// metadata was committed, or uploaded by npm 1.x for a release that never came), then
    /// exit. With local storage and a server running on the data directory, that server sweeps
    /// (through its control socket, `DATA/control.sock`).
    Sweep {
        /// Only touch tarballs written at least this many minutes ago (a day by default: an
        /// npm 1.x upload waits that long for its release).
        #[arg(long, default_value_t = 1440)]
        older_than_minutes: u64,
    },
    /// Print the audit log: every write (publish, unpublish, deprecate, dist-tag, rebind, token
    /// and trust changes) with its time, package, version, outcome, caller and credential kind.
    /// Works while the server runs, on either backend.
    Audit {
        /// Only this package's events.
        #[arg(long)]
        package: Option<String>,
        /// Only events since this time: RFC 3339 (2026-11-30T12:00:00Z) or a duration back
        /// from now (30m, 24h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// At most this many events, the newest.
        #[arg(long)]
        limit: Option<usize>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Read or set a name's origin (the pull-through cache's package origin controls):
    /// `internal` names are only ever served from here, `upstream` names are never published
    /// here. Works while the server runs, on either backend.
    Origin {
        #[command(subcommand)]
        action: OriginAction,
    },
    /// The registry's signing keys (`dist.signatures`, `GET /-/npm/v1/keys`).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
}

/// `registry-server keys` actions.
#[derive(clap::Subcommand, Debug)]
enum KeysAction {
    /// Make a new signing key in the data directory (the old one is kept under
    /// `signing/retired/`). The server signs with it after its next start, which also gives
    /// the old key an expiry in `/-/npm/v1/keys`: its signatures keep verifying for versions
    /// published before then.
    Rotate,
    /// Sign every live version that no listed key vouches for (published before signing was
    /// on, or signed by a key that had expired by then) with the key that signs now. With
    /// local storage and a server running on the data directory, that server signs (through
    /// its control socket); on AWS, run it where `REGISTRY_SIGNING_KMS_KEY` may sign.
    Backfill,
}

/// `registry-server origin` actions.
#[derive(clap::Subcommand, Debug)]
enum OriginAction {
    /// Print the name's origin and why, as JSON.
    Get {
        /// The package name.
        name: String,
    },
    /// Set the name's origin (also before the name exists), then print it as `get` does.
    Set {
        /// The package name.
        name: String,
        /// `internal` or `upstream`.
        origin: String,
    },
}

/// Registers `return_freed_memory_promptly` with the dynamic loader's constructors.
#[used]
#[unsafe(link_section = ".init_array")]
static RETURN_FREED_MEMORY_PROMPTLY: extern "C" fn() = return_freed_memory_promptly;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let blocking_threads = Env::process()
        .number::<usize>("REGISTRY_BLOCKING_THREADS")
        .unwrap_or_else(|e| refuse(e))
        .filter(|&n| n > 0)
        .unwrap_or_else(default_blocking_threads);
    tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(blocking_threads)
        .enable_all()
        .build()?
        .block_on(run())
}

/// Threads for blocking work (database reads, builds of big documents, file I/O): four per core.
/// Tokio's default of 512 lets a burst of reads start dozens, each keeping memory of its own in
/// the allocator: reading every package of a 100k-version directory with 16 connections left
/// 43 threads and 137 MiB of RSS, against 12 threads and 97 MiB with this, at the same rate
/// (the work is CPU-bound on the cores anyway; writes go through the store's own writer thread).
fn default_blocking_threads() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZero::get) * 4
}

/// The server (or one of its commands), once the allocator is set up.
async fn run() -> Result<(), Box<dyn std::error::Error>> {
    {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .with(registry::config::log_filter())
            .init();
    }
    let flags = Flags::parse();
    let env = Env::process();
    let config = Config::from_lookup(|key| {
        let flag = match key {
            "REGISTRY_LISTEN" => &flags.listen,
            "REGISTRY_PUBLIC_URL" => &flags.public_url,
            "REGISTRY_STORAGE" => &flags.storage,
            "REGISTRY_DATA_DIR" => &flags.data,
            "REGISTRY_AUTH" => &flags.auth,
            _ => &None,
        };
        flag.clone().or_else(|| env.raw(key))
    })
    .unwrap_or_else(|e| refuse(e));
    if let Some(Command::Audit {
        package,
        since,
        limit,
        json,
    }) = &flags.command
    {
        let listing = registry::app::commands::audit_listing(
            config,
            package.as_deref(),
            since.as_deref(),
            *limit,
            *json,
        )
        .await
        .unwrap_or_else(|e| refuse(e));
        print!("{listing}");
        return Ok(());
    }
    if let Some(Command::Origin { action }) = &flags.command {
        let (name, set) = match action {
            OriginAction::Get { name } => (name, None),
            OriginAction::Set { name, origin } => (name, Some(origin.as_str())),
        };
        let answer = registry::app::commands::origin(config, name, set)
            .await
            .unwrap_or_else(|e| refuse(e));
        println!("{answer}");
        return Ok(());
    }
    if let Some(Command::Keys {
        action: KeysAction::Backfill,
    }) = &flags.command
    {
        let (report, by_server) = registry::app::commands::keys_backfill(config)
            .await
            .unwrap_or_else(|e| refuse(e));
        if by_server {
            println!("signed by the server running on this data directory");
        }
        println!(
            "checked {} live versions, signed {}",
            report.checked,
            report.signed.len()
        );
        for version in report.signed {
            println!("signed {version}");
        }
        return Ok(());
    }
    if let Some(Command::Keys {
        action: KeysAction::Rotate,
    }) = &flags.command
    {
        let registry::config::StorageConfig::Local { data_dir, .. } = &config.storage else {
            refuse("keys rotate: only local storage keeps a signing key in its data directory");
        };
        let keyid = registry::signing::local::LocalSigner::rotate(data_dir)
            .unwrap_or_else(|e| refuse(format!("keys rotate: {e}")));
        println!("new signing key {keyid}; restart the server to sign with it");
        return Ok(());
    }
    if let Some(Command::Sweep { older_than_minutes }) = flags.command {
        let older_than = std::time::Duration::from_secs(older_than_minutes * 60);
        let swept = registry::app::commands::sweep(config, older_than)
            .await
            .unwrap_or_else(|e| refuse(e));
        let report = swept.report;
        if swept.by_server {
            println!("swept by the server running on this data directory");
        }
        println!(
            "checked {} tarballs, removed {}, removed {} leftovers of interrupted uploads",
            report.checked,
            report.removed.len(),
            report.incomplete
        );
        for key in report.removed {
            println!("removed {}", key.as_str());
        }
        return Ok(());
    }
    // With aws storage, building the state checks that the table and bucket exist.
    let server = match registry::listener::LocalServer::bind(config).await {
        Ok(server) => server,
        Err(registry::listener::ServeError::Start(e)) => refuse(e),
        Err(e) => return Err(e.into()),
    };
    // Before the line that says it is up: a SIGTERM from then on stops it cleanly.
    let shutdown = registry::listener::shutdown_signal();
    // Tests start the server on port 0 and read the real address from this line.
    println!("registry listening on http://{}", server.local_addr()?);
    server.serve(shutdown).await?;
    Ok(())
}

/// Exits on a start-up failure with its whole message (`?` would print its `Debug` form): for a
/// missing table or bucket it names the resource, the endpoint and the command that creates it;
/// for a setting, the variable.
fn refuse(e: impl std::fmt::Display) -> ! {
    eprintln!("registry-server: {e}");
    std::process::exit(1);
}
