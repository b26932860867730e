//! A GitHub world for authorisation tests: the fake GitHub API with users, tokens and
//! repositories, and a registry server in GitHub mode pointed at it.

use std::path::Path;

use crate::fake_github::{FakeGithub, Permission};
use crate::{Backend, Server};

/// A user and their (generated) GitHub token.
#[derive(Clone)]
pub struct User {
    /// GitHub login.
    pub login: &'static str,
    /// Their token, made at test time.
    pub token: String,
}

/// Everyone in the world.
pub struct World {
    /// The fake GitHub.
    pub github: FakeGithub,
    /// Admin of acme/widgets (and owner of the acme organisation's repositories).
    pub alice: User,
    /// Push on acme/widgets; admin of acme/other.
    pub bob: User,
    /// Pull on acme/widgets.
    pub carol: User,
    /// No access to acme/widgets.
    pub dave: User,
    /// Owns mallory/x; would like to publish @victim/x.
    pub mallory: User,
    /// The signing secret the registry is started with.
    pub secret: String,
}

fn token() -> String {
    // Looks like a classic GitHub token; made fresh for every test run.
    format!("ghp_{}", hex::encode(rand_bytes()))
}

fn rand_bytes() -> [u8; 18] {
    rand::random()
}

impl World {
    /// Starts the fake GitHub with the standard cast.
    pub async fn start() -> World {
        let github = FakeGithub::start().await;
        let user = |login: &'static str| User {
            login,
            token: token(),
        };
        let (alice, bob, carol, dave, mallory) = (
            user("alice"),
            user("bob"),
            user("carol"),
            user("dave"),
            user("mallory"),
        );
        for u in [&alice, &bob, &carol, &dave, &mallory] {
            github.add_user(u.login, &u.token);
        }
        github.add_repo("acme", "widgets", true);
        github.add_repo("acme", "other", true);
        github.add_repo("acme", "public-lib", false);
        github.add_repo("victim", "x", true);
        github.add_repo("mallory", "x", false);
        github.grant("acme", "widgets", "alice", Permission::Admin);
        github.grant("acme", "widgets", "bob", Permission::Push);
        github.grant("acme", "widgets", "carol", Permission::Pull);
        github.grant("acme", "other", "alice", Permission::Admin);
        github.grant("acme", "other", "bob", Permission::Admin);
        github.grant("acme", "public-lib", "alice", Permission::Admin);
        github.grant("mallory", "x", "mallory", Permission::Admin);
        World {
            github,
            alice,
            bob,
            carol,
            dave,
            mallory,
            secret: hex::encode(rand_bytes()) + &hex::encode(rand_bytes()),
        }
    }

    /// The registry's environment for GitHub mode on `backend`.
    pub fn env(&self, backend: &Backend, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env = backend.env();
        env.extend(self.github_env());
        for (k, v) in extra {
            env.push((k.to_string(), v.to_string()));
        }
        env
    }

    /// The registry's environment for GitHub mode against this world, on any backend.
    pub fn github_env(&self) -> Vec<(String, String)> {
        vec![
            ("REGISTRY_AUTH".into(), "github".into()),
            ("GITHUB_API_URL".into(), self.github.url.clone()),
            ("REGISTRY_TOKEN_SECRET".into(), self.secret.clone()),
            (
                "REGISTRY_LOG".into(),
                "debug,hyper=info,aws=info,h2=info,rustls=info,tower=info".into(),
            ),
        ]
    }

    /// A registry server in GitHub mode.
    pub fn server(&self, root: &Path, backend: &Backend, extra: &[(&str, &str)]) -> Server {
        Server::start_with(
            root.join("data"),
            root.join("server.log"),
            self.env(backend, extra),
        )
    }
}
