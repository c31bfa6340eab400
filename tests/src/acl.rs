//! The least-privilege users of `docs/DEPLOY.md`, for tests that run each role as its user.

use std::collections::HashMap;

use crate::workspace_root;

/// The password every documented user gets in tests (the doc says `>CHANGE-ME`).
pub const PASSWORD: &str = "acl-test-password";

/// `role -> ACL SETUSER arguments` read from the `ACL SETUSER` lines of docs/DEPLOY.md, with
/// the key pattern rewritten for `prefix` and the test password set. The role is the user
/// name without `sluice-` (`limiter`, `producer`, `worker`, `monitor`, `dashboard`).
pub fn documented_users(prefix: &str) -> HashMap<String, Vec<String>> {
    let path = workspace_root().join("docs/DEPLOY.md");
    let doc =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut users = HashMap::new();
    for line in doc.lines().filter(|l| l.starts_with("ACL SETUSER ")) {
        let args: Vec<String> = line
            .split_whitespace()
            .skip(2)
            .map(|a| match a {
                "~sluice:*" => format!("~{prefix}:*"),
                ">CHANGE-ME" => format!(">{PASSWORD}"),
                other => other.to_owned(),
            })
            .collect();
        let role = args[0].trim_start_matches("sluice-").to_owned();
        users.insert(role, args);
    }
    users
}

/// Create every documented user on the server at `admin_url` (a user allowed `ACL SETUSER`);
/// returns `role -> redis://USER:PASSWORD@127.0.0.1:PORT` for a server on `port`.
pub fn create_documented_users(
    admin_url: &str,
    port: u16,
    prefix: &str,
) -> HashMap<String, String> {
    let mut conn = redis::Client::open(admin_url)
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| panic!("connect {admin_url}: {e}"));
    let mut urls = HashMap::new();
    for (role, args) in documented_users(prefix) {
        let mut cmd = redis::cmd("ACL");
        cmd.arg("SETUSER");
        for a in &args {
            cmd.arg(a);
        }
        let () = cmd
            .query(&mut conn)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        urls.insert(
            role,
            format!("redis://{}:{PASSWORD}@127.0.0.1:{port}", args[0]),
        );
    }
    urls
}
