//! Measures the embedded backend at a size: grows a data directory through the registry's own
//! router (in this process, no network: the publish path exactly as the server runs it), reads
//! every package back, kills a writer mid-stream and times the reopen. Not a test: a tool for
//! the numbers in the embedded backend's measurements (issue 19).
//!
//! ```text
//! cargo run --release -p registry --example embedded_scale -- grow DIR VERSIONS
//! cargo run --release -p registry --example embedded_scale -- read-all DIR
//! cargo run --release -p registry --example embedded_scale -- crash DIR SECONDS
//! cargo run --release -p registry --example embedded_scale -- publish DIR COUNT CONCURRENCY
//! cargo run --release -p registry --example embedded_scale -- tags DIR COUNT CONCURRENCY
//! cargo run --release -p registry --example embedded_scale -- sweep DIR generic|own
//! ```
//!
//! `grow` adds VERSIONS versions to DIR (a fresh or a grown one: names continue where the last
//! run stopped): VERSIONS/10 packages, of which 40 (or one in 500, if fewer) take 40% of the
//! versions, one package in 100 has a 100 KB README in every version, every tarball is ~870 B
//! gzipped, every manifest ~1 KB. It prints the publish rate per tenth, then bytes on disk per
//! version. `read-all` reads every package's full and abbreviated packument and prints the
//! process's RSS (current and peak). `crash` publishes from a child process for SECONDS, kills
//! it (SIGKILL) and times opening the database again, then checks every publish the child saw
//! acknowledged. `publish` and `tags` time new packages' publishes and dist-tag writes (one
//! small commit each); `sweep` times a sweep (see `sweep`). `REGISTRY_DB_CACHE_BYTES`,
//! `REGISTRY_DB_QUICK_REPAIR` and the other settings apply as in the server.

// Counts shown as rates and megabytes: far below 2^52, where f64 starts to round.
#![allow(clippy::cast_precision_loss)]

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;
use tower::ServiceExt;

/// Packages that hold 40% of the versions, at most.
const BIG_PACKAGES: usize = 40;
/// Publishes in flight at once.
const CONCURRENCY: usize = 32;

type Failure = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["grow", dir, versions] => runtime.block_on(grow(Path::new(dir), versions.parse()?)),
        ["read-all", dir] => runtime.block_on(read_all(Path::new(dir))),
        ["crash", dir, seconds] => runtime.block_on(crash(Path::new(dir), seconds.parse()?)),
        ["publish", dir, count, concurrency] => runtime.block_on(publish(
            Path::new(dir),
            count.parse()?,
            concurrency.parse()?,
        )),
        ["tags", dir, count, concurrency] => {
            runtime.block_on(tags(Path::new(dir), count.parse()?, concurrency.parse()?))
        }
        ["sweep", dir, how @ ("generic" | "own")] => {
            runtime.block_on(sweep(Path::new(dir), *how == "generic"))
        }
        ["publish-forever", dir] => runtime.block_on(publish_forever(Path::new(dir))),
        ["cold", dir, name, rounds] => {
            runtime.block_on(cold(Path::new(dir), name, rounds.parse()?))
        }
        _ => Err(
            "usage: embedded_scale grow DIR VERSIONS | read-all DIR | crash DIR SECONDS \
                 | publish DIR COUNT CONCURRENCY | tags DIR COUNT CONCURRENCY \
                 | sweep DIR generic|own | cold DIR NAME ROUNDS"
                .into(),
        ),
    }
}

/// The registry's router over the data directory `dir`, configured from the environment.
async fn app(dir: &Path) -> Result<axum::Router, Failure> {
    let dir = dir.display().to_string();
    let env = registry::config::Env::process();
    let config = registry::config::Config::from_lookup(|key| match key {
        "REGISTRY_DATA_DIR" => Some(dir.clone()),
        "REGISTRY_UPSTREAM" => Some(String::new()),
        "REGISTRY_PUBLIC_URL" => Some("http://registry.test".into()),
        "REGISTRY_STORAGE" | "REGISTRY_AUTH" => None,
        _ => env.raw(key),
    })?;
    let state = registry::app::App::builder(config).build().await?;
    Ok(registry::http::router(
        state,
        &registry::http::RouteGroup::ALL,
    ))
}

/// What the generator publishes: the packages and how many versions each gets.
struct Plan {
    /// (package index, versions) in publishing order.
    packages: Vec<(usize, usize)>,
}

impl Plan {
    fn new(versions: usize) -> Plan {
        let count = (versions / 10).max(1);
        let big = BIG_PACKAGES.min(count / 500);
        let big_versions = if big == 0 { 0 } else { versions * 2 / 5 };
        let small = count - big;
        let mut packages = Vec::with_capacity(count);
        for i in 0..big {
            packages.push((i, big_versions / big + usize::from(i < big_versions % big)));
        }
        let rest = versions - big_versions;
        for j in 0..small {
            packages.push((big + j, rest / small + usize::from(j < rest % small)));
        }
        Plan { packages }
    }
}

/// Where the last `grow` stopped, so the next one publishes new packages.
fn offset_file(dir: &Path) -> PathBuf {
    dir.join("embedded-scale-packages")
}

/// The package names published so far in `dir`.
fn published(dir: &Path) -> usize {
    std::fs::read_to_string(offset_file(dir))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn package_name(i: usize) -> String {
    format!("@scale/p{i:07}")
}

/// A ~1.5 KB `index.js` that gzips to ~870 B: varied text, as code is.
fn source(seed: usize) -> Vec<u8> {
    let mut x = (seed as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = String::from("'use strict';\n");
    while out.len() < 1_500 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push_str(&format!(
            "exports.f{:x} = (a, b) => a * {} + b - {};\n",
            x % 4096,
            x % 97,
            (x >> 8) % 89
        ));
    }
    out.into_bytes()
}

/// The publish document of `name`@`version`, with a README of `readme` bytes if any.
fn publish_body(name: &str, version: &str, seed: usize, readme: usize) -> Vec<u8> {
    let manifest =
        serde_json::to_vec(&json!({ "name": name, "version": version })).unwrap_or_default();
    let tarball = registry::testing::tgz(&[
        ("package/package.json", &manifest),
        ("package/index.js", &source(seed)),
    ]);
    let mut doc = registry::testing::publish_doc(name, version, &tarball);
    let manifest = &mut doc["versions"][version];
    manifest["description"] = json!(
        "A package the scale run generated, with a manifest of about a kilobyte as most have."
    );
    manifest["keywords"] = json!(["scale", "bench", "registry", "embedded"]);
    manifest["license"] = json!("MIT");
    manifest["main"] = json!("index.js");
    manifest["scripts"] = json!({ "test": "node --test", "build": "tsc -p ." });
    manifest["dependencies"] = json!({
        "@scale/dep-a": "^1.2.3", "@scale/dep-b": "~2.0.0", "@scale/dep-c": ">=3 <5",
        "@scale/dep-d": "^0.4.1", "@scale/dep-e": "1.x"
    });
    manifest["repository"] =
        json!({ "type": "git", "url": "git+https://github.com/scale/packages.git" });
    manifest["author"] = json!("Scale Run <scale@example.com>");
    if readme > 0 {
        doc["readme"] = json!("# README\n".repeat(readme / 9));
    }
    serde_json::to_vec(&doc).unwrap_or_default()
}

async fn send(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Vec<u8>,
    accept: &str,
) -> Result<(StatusCode, usize), Failure> {
    // With its length declared, as clients send it: a body of unknown length is budgeted at the
    // largest allowed, and a few of those at once answer 503.
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .header("accept", accept)
        .body(Body::from(body))?;
    let response = app.clone().oneshot(request).await?;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
    Ok((status, bytes.len()))
}

fn escaped(name: &str) -> String {
    name.replace('/', "%2f")
}

async fn grow(dir: &Path, versions: usize) -> Result<(), Failure> {
    std::fs::create_dir_all(dir)?;
    let first = published(dir);
    let plan = Plan::new(versions);
    let app = app(dir).await?;
    let done = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let packages = Arc::new(plan.packages);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (app, done, next, packages) =
            (app.clone(), done.clone(), next.clone(), packages.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(index, count)) = packages.get(n) else {
                    return Ok::<(), Failure>(());
                };
                let i = first + index;
                let name = package_name(i);
                let readme = if i % 100 == 50 { 100_000 } else { 0 };
                for v in 0..count {
                    let version = format!("1.{}.{}", v / 1000, v % 1000);
                    let body = publish_body(&name, &version, i * 10_000 + v, readme);
                    let (status, _) = send(
                        &app,
                        "PUT",
                        &format!("/{}", escaped(&name)),
                        body,
                        "application/json",
                    )
                    .await?;
                    if status != StatusCode::CREATED {
                        return Err(format!("{name}@{version}: {status}").into());
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let reporter = {
        let done = done.clone();
        tokio::spawn(async move {
            let (mut last, mut at) = (0, Instant::now());
            for tenth in 1..=10 {
                while done.load(Ordering::Relaxed) < versions * tenth / 10 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let now = done.load(Ordering::Relaxed);
                let rate = (now - last) as f64 / at.elapsed().as_secs_f64();
                println!("{now} versions: {rate:.0}/s over the last tenth");
                (last, at) = (now, Instant::now());
            }
        })
    };
    for worker in workers {
        worker.await??;
    }
    reporter.await?;
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{versions} versions in {elapsed:.1} s: {:.0}/s",
        versions as f64 / elapsed
    );
    std::fs::write(offset_file(dir), (first + packages.len()).to_string())?;
    drop(app);
    disk_usage(dir).await?;
    Ok(())
}

/// Bytes on disk (allocated blocks) under `path`, and how many files.
fn allocated(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.is_dir() {
        return Ok((meta.blocks() * 512, 1));
    }
    let (mut bytes, mut files) = (meta.blocks() * 512, 0);
    for entry in std::fs::read_dir(path)? {
        let (b, f) = allocated(&entry?.path())?;
        bytes += b;
        files += f;
    }
    Ok((bytes, files))
}

/// Prints what the data directory takes on disk, per version (one tarball each: small ones are
/// rows of the database, the others files).
async fn disk_usage(dir: &Path) -> Result<(), Failure> {
    use registry::storage::TarballStore;
    let (db, _) = allocated(&dir.join("metadata.redb"))?;
    let (tarballs, files) = allocated(&dir.join("tarballs"))?;
    let versions = {
        let (_metadata, store) = registry::storage::embedded::open(dir)?;
        store.list(Duration::ZERO).await?.len()
    };
    let per = |b: u64| b as f64 / versions.max(1) as f64;
    println!(
        "on disk: database {:.1} MB ({:.0} B/version), tarball files {:.1} MB in {files} files ({:.0} B/version), {:.0} B/version in all ({versions} tarballs)",
        db as f64 / 1e6,
        per(db),
        tarballs as f64 / 1e6,
        per(tarballs),
        per(db + tarballs)
    );
    Ok(())
}

/// Current and peak resident memory of this process, from /proc.
fn rss() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .filter(|l| l.starts_with("VmRSS") || l.starts_with("VmHWM"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn read_all(dir: &Path) -> Result<(), Failure> {
    let count = published(dir);
    let app = app(dir).await?;
    println!("after opening: {}", rss());
    let next = Arc::new(AtomicUsize::new(0));
    let bytes = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (app, next, bytes) = (app.clone(), next.clone(), bytes.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<(), Failure>(());
                }
                let uri = format!("/{}", escaped(&package_name(i)));
                for accept in ["application/vnd.npm.install-v1+json", "application/json"] {
                    let (status, len) = send(&app, "GET", &uri, Vec::new(), accept).await?;
                    if status != StatusCode::OK {
                        return Err(format!("{uri}: {status}").into());
                    }
                    bytes.fetch_add(len, Ordering::Relaxed);
                }
            }
        }));
    }
    for worker in workers {
        worker.await??;
    }
    println!(
        "read {count} packages twice (abbreviated, full) in {:.1} s, {:.0} MB served: {}",
        started.elapsed().as_secs_f64(),
        bytes.load(Ordering::Relaxed) as f64 / 1e6,
        rss()
    );
    Ok(())
}

/// Reads NAME's abbreviated and full packument (gzip, as npm asks) ROUNDS times each, every
/// time through a new application over the same stores (an empty packument cache, as after a
/// start): the cold read's cost, from the renders the store keeps once the first has built
/// them. `REGISTRY_KEPT_RENDERS=off` builds every time instead.
async fn cold(dir: &Path, name: &str, rounds: usize) -> Result<(), Failure> {
    let (meta, tarballs) = registry::storage::embedded::open_configured(
        dir,
        registry::storage::embedded::Settings::default(),
    )?;
    let (meta, tarballs) = (Arc::new(meta), Arc::new(tarballs));
    let keep = std::env::var("REGISTRY_KEPT_RENDERS").map_or(true, |v| v != "off");
    let uri = format!("/{}", escaped(name));
    println!("after opening: {}", rss());
    for accept in ["application/vnd.npm.install-v1+json", "application/json"] {
        let mut times = Vec::with_capacity(rounds);
        let mut served = 0;
        for _ in 0..rounds {
            let config = registry::config::Config::from_lookup(|key| match key {
                "REGISTRY_DATA_DIR" => Some(dir.display().to_string()),
                "REGISTRY_UPSTREAM" => Some(String::new()),
                "REGISTRY_PUBLIC_URL" => Some("http://registry.test".into()),
                _ => None,
            })?;
            let mut builder = registry::app::App::builder(config).stores(
                meta.clone(),
                tarballs.clone() as Arc<dyn registry::storage::TarballStore>,
            );
            if keep {
                builder = builder.renders(meta.clone());
            }
            let app =
                registry::http::router(builder.build().await?, &registry::http::RouteGroup::ALL);
            let request = Request::builder()
                .uri(&uri)
                .header("accept", accept)
                .header("accept-encoding", "gzip")
                .body(Body::empty())?;
            let started = Instant::now();
            let response = app.oneshot(request).await?;
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
            times.push(started.elapsed());
            if status != StatusCode::OK {
                return Err(format!("{uri}: {status}").into());
            }
            served = bytes.len();
            // The first build's render is kept by a task of its own: let it land.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let first = times[0];
        times.sort();
        println!(
            "{accept}: {served} B gzip; first {:.2} ms; p50 {:.2} ms, min {:.2} ms, max {:.2} ms; {}",
            first.as_secs_f64() * 1e3,
            times[rounds / 2].as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3,
            times[rounds - 1].as_secs_f64() * 1e3,
            rss()
        );
    }
    Ok(())
}

/// Publishes COUNT versions, each of a new package, CONCURRENCY at once: the publish rate at the
/// directory's size, without `grow`'s long-running big packages.
async fn publish(dir: &Path, count: usize, concurrency: usize) -> Result<(), Failure> {
    let app = app(dir).await?;
    let run = rand_suffix();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (app, run, next) = (app.clone(), run.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<(), Failure>(());
                }
                let name = format!("@rate/r{run}-{i}");
                let body = publish_body(&name, "1.0.0", i, 0);
                let (status, _) = send(
                    &app,
                    "PUT",
                    &format!("/{}", escaped(&name)),
                    body,
                    "application/json",
                )
                .await?;
                if status != StatusCode::CREATED {
                    return Err(format!("{name}: {status}").into());
                }
            }
        }));
    }
    for worker in workers {
        worker.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{count} publishes, {concurrency} at once: {:.0}/s, {:.2} ms each on average",
        count as f64 / elapsed,
        elapsed * 1e3 * concurrency as f64 / count as f64
    );
    Ok(())
}

/// Sets COUNT dist-tags, CONCURRENCY at once (each worker on a package `grow` made): writes that
/// are one small database commit each, without a tarball, for the cost of a commit.
async fn tags(dir: &Path, count: usize, concurrency: usize) -> Result<(), Failure> {
    let app = app(dir).await?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let (app, next) = (app.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let name = escaped(&package_name(1000 + w));
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<(), Failure>(());
                }
                let uri = format!("/-/package/{name}/dist-tags/t{}", i % 8);
                let (status, _) =
                    send(&app, "PUT", &uri, b"\"1.0.0\"".to_vec(), "application/json").await?;
                if status != StatusCode::OK && status != StatusCode::CREATED {
                    return Err(format!("{uri}: {status}").into());
                }
            }
        }));
    }
    for worker in workers {
        worker.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{count} dist-tag writes, {concurrency} at once: {:.0}/s, {:.2} ms each on average",
        count as f64 / elapsed,
        elapsed * 1e3 * concurrency as f64 / count as f64
    );
    Ok(())
}

/// Times a sweep of every age (it deletes what no live version refers to): `own`, the embedded
/// store's (one directory listing and one listing of the small tarballs' keys, one range read
/// per package); `generic`, the walk through the storage traits that every backend without its
/// own uses (a key list, then one version read and decode per key), which the embedded store
/// used before. The generic walk goes through the tarball store alone, which sees files only:
/// small tarballs, rows of the database, are not part of it.
async fn sweep(dir: &Path, generic: bool) -> Result<(), Failure> {
    let (metadata, tarballs) = registry::storage::embedded::open(dir)?;
    let started = Instant::now();
    let report = if generic {
        let standalone = registry::storage::embedded::EmbeddedTarballs::open(dir)?;
        registry::storage::sweep(&metadata, &standalone, Duration::ZERO).await?
    } else {
        registry::storage::sweep(&metadata, &tarballs, Duration::ZERO).await?
    };
    println!(
        "{} sweep: checked {}, removed {}, in {:.2} s; {}",
        if generic { "generic" } else { "own" },
        report.checked,
        report.removed.len(),
        started.elapsed().as_secs_f64(),
        rss()
    );
    Ok(())
}

/// Publishes new versions of new packages until killed, printing each acknowledged one.
async fn publish_forever(dir: &Path) -> Result<(), Failure> {
    let app = app(dir).await?;
    let run = rand_suffix();
    let mut workers = Vec::new();
    for w in 0..CONCURRENCY {
        let (app, run) = (app.clone(), run.clone());
        workers.push(tokio::spawn(async move {
            let name = format!("@crash/r{run}-w{w}");
            for v in 0.. {
                let version = format!("1.0.{v}");
                let body = publish_body(&name, &version, v, 0);
                let (status, _) = send(
                    &app,
                    "PUT",
                    &format!("/{}", escaped(&name)),
                    body,
                    "application/json",
                )
                .await?;
                if status != StatusCode::CREATED {
                    return Err::<(), Failure>(format!("{name}@{version}: {status}").into());
                }
                let mut out = std::io::stdout().lock();
                writeln!(out, "{name} {version}")?;
                out.flush()?;
            }
            Ok(())
        }));
    }
    for worker in workers {
        worker.await??;
    }
    Ok(())
}

fn rand_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{nanos:08x}")
}

async fn crash(dir: &Path, seconds: u64) -> Result<(), Failure> {
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("publish-forever")
        .arg(dir)
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let reader = std::thread::spawn(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    std::thread::sleep(Duration::from_secs(seconds));
    child.kill()?; // SIGKILL
    child.wait()?;
    let acknowledged = reader.join().map_err(|_| "reader panicked")?;
    let (db, _) = allocated(&dir.join("metadata.redb"))?;
    let started = Instant::now();
    let (metadata, _tarballs) = registry::storage::embedded::open(dir)?;
    let reopen = started.elapsed();
    println!(
        "killed after {} acknowledged publishes; reopened the {:.0} MB database in {:.1} ms",
        acknowledged.len(),
        db as f64 / 1e6,
        reopen.as_secs_f64() * 1e3
    );
    use registry::storage::MetadataStore;
    let mut lost = 0;
    for line in &acknowledged {
        let Some((name, version)) = line.split_once(' ') else {
            continue;
        };
        let name = registry::domain::PackageName::parse(name)?;
        let version = semver::Version::parse(version)?;
        if metadata.version(&name, &version).await?.is_none() {
            lost += 1;
            println!("lost: {line}");
        }
    }
    println!("{lost} acknowledged publishes lost");
    Ok(())
}
