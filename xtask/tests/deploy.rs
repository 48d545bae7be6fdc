//! `deploy` and the deploy data: targets as data in meta.nix, the droids/ kind, and real
//! deployments over a real sshd (Debian's openssh-server) on loopback.

mod common;

use common::Fixture;

/// A droid, a host and a home with `deploy` settings: `list --json` shows them, `check`
/// evaluates the droid with the others in its one batched nix process.
#[test]
fn droids_and_deploy_settings_in_list_and_check() {
    let f = Fixture::new();
    f.home_module("alice", "{ ... }: { home.file.a.text = \"x\"; }\n")
        .home_module("alice@phone", "{ ... }: { }\n")
        .write(
            "homes/alice/meta.nix",
            "{ deploy = { targetHost = \"alice@laptop\"; tags = [ \"mobile\" ]; }; }\n",
        )
        .host(
            "web",
            Some("{ deploy = { targetHost = \"root@web\"; buildOn = \"remote\"; sshOpts = [ \"-p\" \"2222\" ]; }; }\n"),
        )
        .write("droids/phone/default.nix", "{ ... }: { }\n")
        .write(
            "droids/phone/meta.nix",
            "{ system = \"aarch64-linux\"; deploy.targetHost = \"nix-on-droid@phone\"; }\n",
        )
        .commit();
    let run = f.xtask(&["list", "--json"]);
    run.success();
    let v = run.json();
    assert_eq!(v["droids"][0]["name"], "phone");
    assert_eq!(v["droids"][0]["system"], "aarch64-linux");
    assert_eq!(v["droids"][0]["users"][0], "alice");
    assert_eq!(v["droids"][0]["deploy"]["targetHost"], "nix-on-droid@phone");
    assert_eq!(v["hosts"][0]["deploy"]["buildOn"], "remote");
    assert_eq!(v["hosts"][0]["deploy"]["sshOpts"][1], "2222");
    assert_eq!(v["homes"][0]["deploy"]["tags"][0], "mobile");
    assert_eq!(v["homes"][0]["deploy"]["buildOn"], "local");

    let run = f.xtask(&["check"]);
    run.success()
        .stderr_has("evaluating 3 target(s) in one nix process");
    let parts = f
        .nix_eval("o: o.nixOnDroidConfigurations.phone.homeParts")
        .unwrap();
    assert_eq!(parts, serde_json::json!(["alice", "alice@phone"]));

    // A broken droid is a finding of check, like a broken host.
    f.write(
        "droids/phone/default.nix",
        "{ ... }: { x = undefinedThing; }\n",
    )
    .commit();
    f.xtask(&["check"])
        .failure(1)
        .stderr_has("droid 'phone' does not evaluate");
    // A bad deploy setting is a finding against the meta.nix.
    f.write(
        "droids/phone/meta.nix",
        "{ deploy = { targetHost = \"x\"; buildOn = \"cloud\"; }; }\n",
    )
    .write("droids/phone/default.nix", "{ ... }: { }\n")
    .commit();
    f.xtask(&["check", "--lint-only"])
        .failure(1)
        .stderr_has("droids/phone/meta.nix: deploy.buildOn = \"cloud\" is neither");
}
