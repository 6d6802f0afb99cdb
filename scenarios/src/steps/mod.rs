//! Carrying out steps on a [`World`]: one module per family (components, objects, the mock KMS,
//! expectations and waits). Each step returns a one-line account of what it saw.

mod components;
mod expect;
mod incidents;
mod kms;
mod objects;

use std::future::Future;
use std::pin::Pin;

use crate::error::StepError;
use crate::model::{Apply, Step};
use crate::world::World;

/// What a finished step reports: one line for the progress log.
pub type StepResult = Result<String, StepError>;

/// Runs one step.
pub fn run<'a>(world: &'a mut World, step: &'a Step) -> Pin<Box<dyn Future<Output = StepResult> + Send + 'a>> {
    Box::pin(async move {
        match step {
            Step::Note(text) => Ok(text.clone()),
            Step::Start(c) => components::start(world, c).await,
            Step::Stop(c) => components::stop(world, c, false).await,
            Step::Kill(c) => components::stop(world, c, true).await,
            Step::Restart(c) => {
                components::stop(world, c, false).await?;
                components::start(world, c).await
            }
            Step::AddApiserver(add) => components::add_apiserver(world, add).await,
            Step::Encryption(e) => components::encryption(world, e).await,
            Step::Create(o) => objects::create(world, o).await,
            Step::Update(o) => objects::update(world, o).await,
            Step::Read(o) => objects::read(world, o).await,
            Step::Delete(o) => objects::delete(world, o).await,
            Step::Rewrite(r) => objects::rewrite(world, r).await,
            Step::Load(load) => objects::load(world, load).await,
            Step::Faults(f) => kms::faults(world, f).await,
            Step::ClearFaults => kms::clear_faults(world).await,
            Step::RotateKek => kms::rotate(world).await,
            Step::Unseal(shares) => kms::unseal(world, *shares).await,
            Step::DisableKeyVersion(d) => kms::disable_key_version(world, d).await,
            Step::SetCredentials(c) => kms::set_credentials(world, c).await,
            Step::Mark(name) => expect::mark(world, name).await,
            Step::WaitUntil(wait) => expect::wait_until(world, wait).await,
            Step::ExpectHealth(h) => expect::health(world, h).await,
            Step::ExpectEtcd(e) => expect::etcd(world, e).await,
            Step::ExpectNoPlaintextInEtcd => expect::no_plaintext(world).await,
            Step::ExpectAudit(a) => expect::audit(world, a).await,
            Step::ExpectMetric(m) => expect::metric(world, m).await,
            Step::ExpectPluginStatus(p) => expect::plugin_status(world, p).await,
            Step::Lint(l) => incidents::lint(world, l).await,
            Step::ExpectSocket(e) => incidents::socket(world, e).await,
            Step::List(l) => incidents::list(world, l).await,
            Step::CountDekSources(c) => incidents::dek_sources(world, c).await,
            Step::TimeUntil(t) => incidents::time_until(world, t).await,
            Step::ObserveHealth(o) => incidents::observe_health(world, o).await,
            Step::RestartApiserver(r) => incidents::restart_apiserver(world, r).await,
            Step::ColdStart(c) => incidents::cold_start(world, c).await,
            Step::SetCurrentKeyVersion(v) => incidents::set_current_key_version(world, v).await,
            Step::KmsCalls(k) => incidents::kms_calls(world, k).await,
        }
    })
}

/// A short label for a step in the progress log (`create 200 secrets s-*`).
pub fn label(step: &Step) -> String {
    match step {
        Step::Note(_) => "note".into(),
        Step::Start(c) => format!("start {c}"),
        Step::Stop(c) => format!("stop {c}"),
        Step::Kill(c) => format!("kill -9 {c}"),
        Step::Restart(c) => format!("restart {c}"),
        Step::AddApiserver(_) => "add an apiserver".into(),
        Step::Encryption(e) => {
            let providers: Vec<String> = e
                .resources
                .iter()
                .map(|(resource, providers)| {
                    format!("{resource}: {}", providers.iter().map(provider_label).collect::<Vec<_>>().join(" → "))
                })
                .collect();
            let how = match e.apply {
                Apply::Reload => "reload",
                Apply::Restart => "restart",
                Apply::RestartServing => "restart, wait until it answers",
                Apply::WriteOnly => "write only",
            };
            format!("encryption [{}] ({how})", providers.join("; "))
        }
        Step::Create(o) => objects_label("create", o),
        Step::Update(o) => objects_label("update", o),
        Step::Read(o) => objects_label("read", o),
        Step::Delete(o) => objects_label("delete", o),
        Step::Rewrite(r) => format!("rewrite all {} (kubectl get -A -o json | kubectl replace -f -)", r.kind.resource()),
        Step::Load(l) => format!("load: {} writers on {}-* while {} steps run", l.writers, l.prefix, l.during.len()),
        Step::Faults(f) => format!(
            "mock KMS faults{}: {}",
            f.node.map(|n| format!(" on node {n}")).unwrap_or_default(),
            serde_json::to_string(&f.profile).unwrap_or_default()
        ),
        Step::ClearFaults => "clear mock KMS faults".into(),
        Step::RotateKek => "rotate the KEK in the mock KMS".into(),
        Step::Unseal(n) => format!("give the mock KMS {n} more unseal share(s)"),
        Step::DisableKeyVersion(d) => format!("disable the key version {} used at `{}`", d.plugin, d.mark),
        Step::SetCredentials(c) => format!("mock KMS accepts only access key `{}`", c.access_key),
        Step::Mark(name) => format!("mark `{name}`"),
        Step::WaitUntil(w) => format!("wait ≤ {} until {}", humantime::format_duration(w.within.0), expect::condition_label(w)),
        Step::ExpectHealth(h) => format!("expect apiserver-{} {} {}", h.apiserver, h.path, if h.healthy { "healthy" } else { "failing" }),
        Step::ExpectEtcd(e) => format!("expect etcd {}/{}*", e.kind.resource(), e.prefix.as_deref().unwrap_or("")),
        Step::ExpectNoPlaintextInEtcd => "expect no plaintext anywhere in etcd".into(),
        Step::ExpectAudit(a) => format!("expect mock KMS {} calls since `{}`", a.action.name(), a.since),
        Step::ExpectMetric(m) => format!("expect metric {}", m.name),
        Step::ExpectPluginStatus(p) => format!("expect {} Status", p.plugin),
        Step::Lint(l) => format!(
            "kms-lab lint apiserver-{}'s EncryptionConfiguration{}",
            l.apiserver,
            if l.against.is_empty() { String::new() } else { format!(" against apiserver-{:?}", l.against) }
        ),
        Step::ExpectSocket(e) => format!("expect {}'s socket file {}", e.plugin, if e.exists { "present" } else { "absent" }),
        Step::List(l) => format!(
            "list all {} on apiserver-{}{}",
            l.kind.resource(),
            l.apiserver,
            l.expect_error.as_ref().map(|p| format!(", expecting an error /{}/", p.0.as_str())).unwrap_or_default()
        ),
        Step::CountDekSources(c) => {
            format!("count distinct DEK sources of {}/{}* in etcd", c.kind.resource(), c.prefix.as_deref().unwrap_or(""))
        }
        Step::TimeUntil(t) => {
            format!("time (≤ {}) until {} → `{}`", humantime::format_duration(t.within.0), incidents::time_until_label(t), t.figure)
        }
        Step::ObserveHealth(o) => format!("observe apiserver-{} {} for {}", o.apiserver, o.path, humantime::format_duration(o.duration.0)),
        Step::RestartApiserver(r) => format!(
            "restart apiserver-{} (wait for {})",
            r.apiserver,
            match r.wait {
                crate::model::WaitFor::Live => "/livez",
                crate::model::WaitFor::Ready => "/readyz",
                crate::model::WaitFor::Serving => "/livez/ping",
            }
        ),
        Step::ColdStart(c) => format!("cold start apiserver-{} until a full LIST of {}", c.apiserver, c.kind.resource()),
        Step::SetCurrentKeyVersion(v) => format!("make the key version {} used at `{}` current again", v.plugin, v.mark),
        Step::KmsCalls(k) => format!("count mock KMS {} calls since `{}`", k.action.name(), k.since),
    }
}

fn provider_label(provider: &crate::model::ProviderSpec) -> String {
    use crate::model::ProviderSpec;
    match provider {
        ProviderSpec::Identity(_) => "identity".into(),
        ProviderSpec::Aescbc(k) => format!("aescbc:{}", k.key),
        ProviderSpec::Aesgcm(k) => format!("aesgcm:{}", k.key),
        ProviderSpec::Secretbox(k) => format!("secretbox:{}", k.key),
        ProviderSpec::Kms(k) => format!("kms-{}:{}", if k.api == crate::model::KmsApi::V1 { "v1" } else { "v2" }, k.name),
    }
}

fn objects_label(verb: &str, o: &crate::model::Objects) -> String {
    let count = o.count.map(|c| format!("{c} ")).unwrap_or_default();
    let prefix = o.prefix.as_deref().map(|p| format!(" {p}-*")).unwrap_or_default();
    let on = if o.apiserver == 0 { String::new() } else { format!(" on apiserver-{}", o.apiserver) };
    let expect = o.expect_error.as_ref().map(|p| format!(", expecting errors /{}/", p.0.as_str())).unwrap_or_default();
    format!("{verb} {count}{}{prefix}{on}{expect}", o.kind.resource())
}
