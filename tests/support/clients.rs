//! Every package manager people use, driven against the real registry-server process: npm 10 and
//! 11, pnpm, yarn 1, yarn 4 (node-modules and PnP linkers) and bun. Each client gets its own HOME,
//! cache, store and configuration inside the test's temporary directory, and is pointed at the
//! test server for every scope, so no test can reach the public registry.
//!
//! The pinned clients are installed by `tests/tools.sh`, which exports where they are.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::Run;

/// Which client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// npm 11 (the pinned `NPM_BIN`).
    Npm11,
    /// npm 10 (`NPM10_BIN`, run with node).
    Npm10,
    /// pnpm 10 (`PNPM_BIN`, run with node).
    Pnpm,
    /// yarn 1 (`YARN1_JS`, run with node).
    Yarn1,
    /// yarn 4 with `nodeLinker: node-modules` (`YARN4_JS`, run with node).
    Yarn4NodeModules,
    /// yarn 4 with its default Plug'n'Play linker.
    Yarn4Pnp,
    /// bun (`BUN_BIN`).
    Bun,
}

impl Kind {
    /// A short label for directories and messages.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Npm11 => "npm11",
            Kind::Npm10 => "npm10",
            Kind::Pnpm => "pnpm",
            Kind::Yarn1 => "yarn1",
            Kind::Yarn4NodeModules => "yarn4-node-modules",
            Kind::Yarn4Pnp => "yarn4-pnp",
            Kind::Bun => "bun",
        }
    }

    /// The lockfile the client writes.
    pub fn lockfile(self) -> &'static str {
        match self {
            Kind::Npm11 | Kind::Npm10 => "package-lock.json",
            Kind::Pnpm => "pnpm-lock.yaml",
            Kind::Yarn1 | Kind::Yarn4NodeModules | Kind::Yarn4Pnp => "yarn.lock",
            Kind::Bun => "bun.lock",
        }
    }

    fn is_yarn4(self) -> bool {
        matches!(self, Kind::Yarn4NodeModules | Kind::Yarn4Pnp)
    }
}

/// Where the client's configuration points it at the registry, and where the token goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Config {
    /// Every package from the registry, the token for its host (the open-mode suite).
    Everything,
    /// What an organisation writes (the README's snippets): the `@acme` scope to the registry,
    /// with the token where the client's documentation puts it (`.npmrc` for npm, pnpm, yarn 1
    /// and bun; `npmScopes` in `.yarnrc.yml` for yarn 4), read from `$GITHUB_TOKEN`.
    Scope,
    /// bun only: the scope and its token (`$GITHUB_TOKEN`) in `bunfig.toml`'s
    /// `[install.scopes]`, no token in `.npmrc`.
    BunfigScope,
}

fn tool_env(key: &str) -> PathBuf {
    let value = std::env::var(key).unwrap_or_else(|_| {
        panic!(
            "{key} is not set: `source tests/tools.sh` installs the pinned clients (tests/run does)"
        )
    });
    let path = PathBuf::from(value);
    assert!(
        path.exists(),
        "{key}={} does not exist: run `source tests/tools.sh`",
        path.display()
    );
    path
}

/// One client with its own HOME, cache, store and configuration, pointed at one registry.
pub struct Client {
    /// Which client.
    pub kind: Kind,
    /// Everything of this client's lives under here.
    pub root: PathBuf,
    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub registry: String,
    /// The token it sends, if any.
    pub token: Option<String>,
    /// How it is configured.
    pub config: Config,
}

impl Client {
    /// Sets up `kind` under `root/<label>` for `registry_url`, for every package, with a
    /// placeholder token (the registry in open mode ignores it).
    pub fn new(kind: Kind, root: &Path, registry_url: &str) -> Client {
        Self::configured(
            kind,
            root,
            registry_url,
            Some("test-token"),
            Config::Everything,
        )
    }

    /// Sets up `kind` under `root/<label>` for `registry_url`, configured as `config` says,
    /// sending `token` (or none).
    pub fn configured(
        kind: Kind,
        root: &Path,
        registry_url: &str,
        token: Option<&str>,
        config: Config,
    ) -> Client {
        assert!(
            config != Config::BunfigScope || kind == Kind::Bun,
            "bunfig.toml is bun's"
        );
        let root = root.join(kind.label());
        for dir in ["home", "cache", "store", "config", "data", "state", "tmp"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        let client = Client {
            kind,
            root,
            registry: registry_url.trim_end_matches('/').to_string(),
            token: token.map(str::to_string),
            config,
        };
        // The user-level configuration (npm, pnpm, yarn 1 and bun all read ~/.npmrc).
        std::fs::write(client.home().join(".npmrc"), client.npmrc()).unwrap();
        if kind == Kind::Pnpm {
            // pnpm's own settings go to its global rc: `pnpm publish` runs npm, which warns
            // about settings it does not know in .npmrc.
            let dir = client.root.join("config").join("pnpm");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                dir.join("rc"),
                format!(
                    "store-dir={}\ncache-dir={}\nstate-dir={}\nupdate-notifier=false\n",
                    client.cache().display(),
                    client.root.join("config").join("pnpm-cache").display(),
                    client.root.join("state").display()
                ),
            )
            .unwrap();
        }
        client
    }

    /// HOME.
    pub fn home(&self) -> PathBuf {
        self.root.join("home")
    }

    /// The client's download cache (for pnpm: its content-addressable store).
    pub fn cache(&self) -> PathBuf {
        self.root.join("cache")
    }

    fn host_path(&self) -> String {
        self.registry
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_string()
    }

    /// The `.npmrc` (user and project). `registry=` always points here, so that nothing can
    /// reach the public registry even if a client ignored the scope line.
    fn npmrc(&self) -> String {
        let host = self.host_path();
        let mut rc = format!("registry={}/\n", self.registry);
        if self.config != Config::Everything {
            rc.push_str(&format!("@acme:registry={}/\n", self.registry));
        }
        match (&self.token, self.config) {
            (_, Config::BunfigScope) | (None, _) => {}
            (Some(token), Config::Everything) => {
                rc.push_str(&format!("//{host}/:_authToken={token}\n"));
            }
            // As the README tells users: the token from the environment.
            (Some(_), Config::Scope) => {
                rc.push_str(&format!("//{host}/:_authToken=${{GITHUB_TOKEN}}\n"));
            }
        }
        rc.push_str("audit=false\nfund=false\nupdate-notifier=false\n");
        rc
    }

    /// yarn 4's `.yarnrc.yml` lines naming the registry and the token.
    fn yarnrc_registry(&self) -> String {
        let token = |indent: &str| match (&self.token, self.config) {
            (None, _) => String::new(),
            (Some(_), Config::Scope) => format!("{indent}npmAuthToken: \"${{GITHUB_TOKEN}}\"\n"),
            (Some(t), _) => format!("{indent}npmAuthToken: \"{t}\"\n"),
        };
        match self.config {
            Config::Scope => format!(
                "npmRegistryServer: \"{r}\"\n\
                 npmPreapprovedPackages: [\"@acme/*\"]\n\
                 npmScopes:\n  acme:\n    npmRegistryServer: \"{r}\"\n{}",
                token("    "),
                r = self.registry
            ),
            _ => format!("npmRegistryServer: \"{}\"\n{}", self.registry, token("")),
        }
    }

    /// bun's `bunfig.toml`.
    fn bunfig(&self) -> String {
        let cache = format!("cache = \"{}\"\n", self.cache().display());
        let entry = match (&self.token, self.config) {
            (None, _) => format!("\"{}/\"", self.registry),
            (Some(_), Config::BunfigScope) => format!(
                "{{ url = \"{}/\", token = \"$GITHUB_TOKEN\" }}",
                self.registry
            ),
            (Some(t), _) => format!("{{ url = \"{}/\", token = \"{t}\" }}", self.registry),
        };
        match self.config {
            Config::Everything => format!("[install]\nregistry = {entry}\n{cache}"),
            // Scope and token from .npmrc, which bun reads too.
            Config::Scope => format!("[install]\n{cache}"),
            Config::BunfigScope => format!(
                "[install]\nregistry = \"{}/\"\n{cache}\n[install.scopes]\nacme = {entry}\n",
                self.registry
            ),
        }
    }

    /// Writes the client's per-project configuration into `dir`.
    pub fn configure(&self, dir: &Path) {
        match self.kind {
            Kind::Npm11 | Kind::Npm10 | Kind::Pnpm => {
                std::fs::write(dir.join(".npmrc"), self.npmrc()).unwrap();
            }
            Kind::Yarn1 => {
                std::fs::write(dir.join(".npmrc"), self.npmrc()).unwrap();
                std::fs::write(
                    dir.join(".yarnrc"),
                    format!(
                        "registry \"{}/\"\ncache-folder \"{}\"\ndisable-self-update-check true\n",
                        self.registry,
                        self.cache().display()
                    ),
                )
                .unwrap();
            }
            Kind::Yarn4NodeModules | Kind::Yarn4Pnp => {
                let linker = if self.kind == Kind::Yarn4Pnp {
                    "pnp"
                } else {
                    "node-modules"
                };
                // yarn 4.18 holds back versions younger than `npmMinimalAgeGate` (default 1d),
                // judged from the packument's `time`; everything here was published seconds ago.
                let rc = format!(
                    "{registry}\
                     unsafeHttpWhitelist: [\"127.0.0.1\"]\n\
                     npmMinimalAgeGate: 0\n\
                     enableGlobalCache: false\n\
                     cacheFolder: \"{cache}\"\n\
                     globalFolder: \"{global}\"\n\
                     enableTelemetry: false\n\
                     nodeLinker: {linker}\n",
                    registry = self.yarnrc_registry(),
                    cache = self.cache().display(),
                    global = self.root.join("data").display(),
                );
                std::fs::write(dir.join(".yarnrc.yml"), rc).unwrap();
                // A lockfile marks the project root (else yarn looks in parent directories).
                if !dir.join("yarn.lock").exists() {
                    std::fs::write(dir.join("yarn.lock"), "").unwrap();
                }
            }
            Kind::Bun => {
                std::fs::write(dir.join(".npmrc"), self.npmrc()).unwrap();
                std::fs::write(dir.join("bunfig.toml"), self.bunfig()).unwrap();
            }
        }
    }

    /// A new consumer project `root/<label>/<name>` with its configuration.
    pub fn project(&self, name: &str) -> PathBuf {
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("package.json"),
            r#"{"name":"consumer","version":"1.0.0","private":true}"#,
        )
        .unwrap();
        self.configure(&dir);
        dir
    }

    fn command(&self) -> Command {
        let mut cmd = match self.kind {
            Kind::Npm11 => Command::new(tool_env("NPM_BIN")),
            Kind::Bun => Command::new(tool_env("BUN_BIN")),
            Kind::Npm10 | Kind::Pnpm | Kind::Yarn1 | Kind::Yarn4NodeModules | Kind::Yarn4Pnp => {
                let js = match self.kind {
                    Kind::Npm10 => tool_env("NPM10_BIN"),
                    Kind::Pnpm => tool_env("PNPM_BIN"),
                    Kind::Yarn1 => tool_env("YARN1_JS"),
                    _ => tool_env("YARN4_JS"),
                };
                let mut cmd = Command::new("node");
                cmd.arg(js);
                cmd
            }
        };
        // Nothing of the caller's configuration leaks in.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy().to_ascii_lowercase();
            if key.starts_with("npm_config_")
                || key.starts_with("yarn_")
                || key.starts_with("pnpm_")
                || key.starts_with("bun_")
            {
                cmd.env_remove(&key);
                cmd.env_remove(key.to_ascii_uppercase());
            }
        }
        let env: Vec<(&str, OsString)> = vec![
            ("HOME", self.home().into()),
            ("USERPROFILE", self.home().into()),
            (
                "XDG_CACHE_HOME",
                self.root.join("config").join("xdg-cache").into(),
            ),
            ("XDG_CONFIG_HOME", self.root.join("config").into()),
            ("XDG_DATA_HOME", self.root.join("data").into()),
            ("XDG_STATE_HOME", self.root.join("state").into()),
            ("TMPDIR", self.root.join("tmp").into()),
            ("npm_config_userconfig", self.home().join(".npmrc").into()),
            ("npm_config_cache", self.cache().into()),
            ("YARN_CACHE_FOLDER", self.cache().into()),
            ("BUN_INSTALL_CACHE_DIR", self.cache().into()),
            ("BUN_INSTALL", self.root.join("data").join("bun").into()),
            ("NO_COLOR", "1".into()),
            ("FORCE_COLOR", "0".into()),
            ("CI", "true".into()),
            ("COREPACK_ENABLE_STRICT", "0".into()),
            ("DO_NOT_TRACK", "1".into()),
        ];
        for (k, v) in env {
            if self.kind.is_yarn4() && k == "YARN_CACHE_FOLDER" {
                continue;
            }
            cmd.env(k, v);
        }
        // The scope configurations read the token from the environment, as users keep it.
        match (&self.token, self.config) {
            (Some(token), Config::Scope | Config::BunfigScope) => {
                cmd.env("GITHUB_TOKEN", token);
            }
            _ => {
                cmd.env_remove("GITHUB_TOKEN");
            }
        }
        if self.kind == Kind::Pnpm {
            // `pnpm publish` packs and then runs `npm publish` from PATH: make it the pinned npm.
            let npm_dir = tool_env("NPM_BIN").parent().unwrap().to_path_buf();
            let path = std::env::var_os("PATH").unwrap_or_default();
            let mut dirs = vec![npm_dir];
            dirs.extend(std::env::split_paths(&path));
            cmd.env("PATH", std::env::join_paths(dirs).unwrap());
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs the client with `args` in `cwd`.
    pub fn run(&self, cwd: &Path, args: &[&str]) -> Run {
        let out = self
            .command()
            .args(args)
            .current_dir(cwd)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", self.kind.label()));
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs the client and panics with its output unless it succeeds.
    pub fn ok(&self, cwd: &Path, args: &[&str]) -> Run {
        let run = self.run(cwd, args);
        assert!(
            run.ok,
            "{} {args:?} in {} failed:\n{}",
            self.kind.label(),
            cwd.display(),
            run.all()
        );
        run
    }

    /// Adds `spec` (`name`, `name@range` or `name@tag`) to the project, saving the exact version
    /// where the client would otherwise widen a tag to a range.
    pub fn add(&self, project: &Path, spec: &str) -> Run {
        self.ok(project, &self.add_args(spec))
    }

    /// Tries to add `spec`, returning what happened whether or not it worked.
    pub fn try_add(&self, project: &Path, spec: &str) -> Run {
        self.run(project, &self.add_args(spec))
    }

    fn add_args<'a>(&self, spec: &'a str) -> Vec<&'a str> {
        match self.kind {
            Kind::Npm11 | Kind::Npm10 => vec!["install", spec],
            Kind::Pnpm | Kind::Bun => vec!["add", spec],
            Kind::Yarn1 => vec!["add", spec, "--non-interactive"],
            // Without --exact yarn 4 saves a tag's version as `^version`, which then resolves to
            // the highest version in that range rather than the tagged one.
            Kind::Yarn4NodeModules | Kind::Yarn4Pnp => vec!["add", "--exact", spec],
        }
    }

    /// Forgets everything installed and cached: node_modules, the PnP maps and the whole cache.
    pub fn forget_installs(&self, project: &Path) {
        for path in [
            project.join("node_modules"),
            project.join(".pnp.cjs"),
            project.join(".pnp.loader.mjs"),
            project.join(".yarn"),
            self.cache(),
            self.root.join("config").join("pnpm-cache"),
        ] {
            if path.is_dir() {
                std::fs::remove_dir_all(&path).unwrap();
            } else if path.exists() {
                std::fs::remove_file(&path).unwrap();
            }
        }
        std::fs::create_dir_all(self.cache()).unwrap();
    }

    /// Installs exactly what the lockfile says, failing if it would have to change.
    pub fn install_frozen(&self, project: &Path) -> Run {
        match self.kind {
            Kind::Npm11 | Kind::Npm10 => self.ok(project, &["ci"]),
            Kind::Pnpm | Kind::Yarn1 | Kind::Bun => {
                self.ok(project, &["install", "--frozen-lockfile"])
            }
            Kind::Yarn4NodeModules | Kind::Yarn4Pnp => {
                self.ok(project, &["install", "--immutable"])
            }
        }
    }

    /// Publishes the package in `dir` with the client's own publish command.
    pub fn publish(&self, dir: &Path) -> Run {
        self.configure(dir);
        match self.kind {
            Kind::Npm11 | Kind::Npm10 | Kind::Bun => self.ok(dir, &["publish"]),
            Kind::Pnpm => self.ok(dir, &["publish", "--no-git-checks"]),
            Kind::Yarn1 => self.ok(dir, &["publish", "--non-interactive"]),
            Kind::Yarn4NodeModules | Kind::Yarn4Pnp => {
                // `yarn npm publish` needs the package to be an installed project first (and
                // with CI set, yarn 4 installs are immutable unless told otherwise).
                self.ok(dir, &["install", "--no-immutable"]);
                self.ok(dir, &["npm", "publish"])
            }
        }
    }

    /// Runs `node -e CODE` in the project the way this client's installs are loaded (with the PnP
    /// runtime for yarn's PnP linker) and returns its trimmed stdout.
    pub fn node_eval(&self, project: &Path, code: &str) -> String {
        let mut cmd = Command::new("node");
        if self.kind == Kind::Yarn4Pnp {
            cmd.arg("--require").arg(project.join(".pnp.cjs"));
        }
        let out = cmd
            .arg("-e")
            .arg(code)
            .current_dir(project)
            .stdin(Stdio::null())
            .output()
            .expect("run node");
        assert!(
            out.status.success(),
            "node -e {code:?} failed in {} ({}):\n{}\n{}",
            project.display(),
            self.kind.label(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The version of `name` the project loads.
    pub fn loaded_version(&self, project: &Path, name: &str) -> String {
        self.node_eval(
            project,
            &format!("console.log(require({name:?} + '/package.json').version)"),
        )
    }

    /// What the client says about a deprecated version, where it shows deprecations outside an
    /// install: yarn 4 in `yarn npm audit`, bun in `bun info`. The others warn while installing.
    pub fn deprecation_report(&self, project: &Path, spec: &str) -> Option<Run> {
        match self.kind {
            // Exits non-zero when it finds something, which is the point here.
            Kind::Yarn4NodeModules | Kind::Yarn4Pnp => Some(self.run(project, &["npm", "audit"])),
            Kind::Bun => Some(self.ok(project, &["info", spec])),
            _ => None,
        }
    }
}
