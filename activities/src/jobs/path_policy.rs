//! Which paths a coding job may touch.
//!
//! The issue text that drives a job is written by anyone who can open an issue, and the model
//! does what text asks. So the paths it may change are decided here, not by the model: nothing
//! outside the repository, nothing that runs in CI or with the repository's secrets
//! (`.github/`, other CI configurations), nothing CI or a build executes (below), no lockfiles
//! (a dependency swap hidden in a lockfile is the classic supply-chain attack) and nothing that
//! looks like a secret. An operator can allow a protected path explicitly
//! (`SLIPWAY_JOB_ALLOWED_PATHS`); nothing else can.
//!
//! # What CI and builds execute
//!
//! A job pushes its branch to the base repository, so every `push` and `pull_request` workflow
//! runs on it with the repository's secrets before anyone has read the change. A workflow file
//! is only the first link: it calls a Makefile, a script, `npm test`, `cargo build`, `pytest`,
//! and each of those runs files of the repository. Those files are refused unless an operator
//! allows them, each with the tool that runs it named in the refusal (an issue comment a
//! maintainer reads). The list follows what the tools document they run by themselves:
//!
//! - GitHub Actions: a step's `uses: ./path/to/dir` runs the action defined by that directory's
//!   `action.yml` or `action.yaml`, wherever it sits in the repository (GitHub Docs, "Workflow
//!   syntax for GitHub Actions", `jobs.<job_id>.steps[*].uses`, and "Finding and customizing
//!   actions", *Adding an action from the same repository*).
//! - Make: `GNUmakefile`, `makefile`, `Makefile` are read by default (GNU make manual, 3.2 "What
//!   Name to Give Your Makefile"); `*.mk` are what they `include`; `Makefile.am`/`Makefile.in`,
//!   `configure`, `configure.ac`, `CMakeLists.txt` and `*.cmake` generate or run the build.
//! - npm: `package.json` `scripts` run on `npm install` (`preinstall`, `install`, `postinstall`,
//!   `prepare`) and `npm test` (npm docs, "scripts", *Life Cycle Scripts*); Composer likewise runs
//!   `composer.json` scripts. `.npmrc`, `.yarnrc(.yml)` (`yarnPath`) and `.pnpmfile.cjs`
//!   (install hooks) choose what the package manager runs. Build and test tools load their
//!   `*.config.js`/`.ts` (Vite, Jest, webpack, ESLint, Next.js…) and `gulpfile.js`/`Gruntfile.js`
//!   as code.
//! - Cargo: `build.rs` is compiled and run before its package (The Cargo Book, "Build Scripts");
//!   `Cargo.toml` names the build script and the build dependencies and proc macros that run
//!   at compile time; `.cargo/config.toml` sets runners, wrappers and aliases (The Cargo Book,
//!   "Configuration").
//! - Python: `setup.py` and the build backend `pyproject.toml` names (PEP 517, in-tree through
//!   `backend-path`) run on `pip install`; pytest imports every `conftest.py` it collects
//!   ("Writing plugins", *conftest.py: local per-directory plugins*); `noxfile.py` and `tox.ini`
//!   are nox's and tox's sessions and commands; `sitecustomize.py` is imported at interpreter
//!   start (the `site` module); `requirements*.txt` and `Pipfile` name what pip installs, and
//!   installing a source distribution runs its build.
//! - Shell scripts: `*.sh`, `*.bash`, `*.ps1`, `*.bat`, `*.cmd` anywhere, and everything under a
//!   `scripts/`, `script/` (GitHub's "Scripts to Rule Them All"), `ci/`, `.ci/` directory or a
//!   top-level `bin/`: these are what workflows, Makefiles and package scripts call.
//! - Containers: `Dockerfile`/`Containerfile` `RUN` steps, and the Compose files Compose reads by
//!   default (`compose.yaml`, `compose.yml`, `docker-compose.yaml`, `docker-compose.yml`; Docker
//!   docs, "How Compose works"), plus `docker-compose.*.yml` overrides; `.devcontainer/` lifecycle
//!   commands.
//! - Ruby: rake loads `rakefile`, `Rakefile`, `rakefile.rb`, `Rakefile.rb`
//!   (`Rake::Application::DEFAULT_RAKEFILES`) and `*.rake` tasks; Bundler evaluates `Gemfile`
//!   (`gems.rb`) and `*.gemspec` as Ruby.
//! - JVM: `gradlew`/`gradlew.bat` run the Gradle version `gradle-wrapper.properties` names,
//!   downloading it first (Gradle User Manual, "Gradle Wrapper"); `build.gradle(.kts)`,
//!   `settings.gradle(.kts)`, `init.gradle`, `gradle.properties` and `buildSrc/` are build logic;
//!   Maven runs the plugins `pom.xml` names, `mvnw` and `.mvn/` choose Maven and its options.
//! - Bazel: `BUILD`, `BUILD.bazel`, `WORKSPACE(.bazel)`, `MODULE.bazel`, `*.bzl` (repository rules
//!   execute commands) and `.bazelrc`.
//! - Task runners and hooks: `justfile`/`.justfile` (just manual, "Hiding justfiles"),
//!   `Taskfile.yml` (Task), `.pre-commit-config.yaml` (pre-commit, which CI often runs),
//!   `.husky/` (husky's hook scripts, installed by the `prepare` script), `lefthook.yml`, and
//!   `.envrc` (direnv runs it as a shell script).
//!
//! The catalogue of such tools kept by the "Living Off The Pipeline" project
//! (boostsecurityio.github.io/lotp) was the checklist; entries are here when the tool's own
//! documentation says it runs the file without being asked.
//!
//! Left out on purpose: `.gitattributes` (a filter or diff driver it names runs only if the
//! runner's own git configuration defines it, which the repository cannot), `go.mod` (Go runs no
//! dependency code at build or download). What this policy cannot see: ordinary source that a
//! test suite runs (a new `#[test]` or `test_*.py` executes in CI like any script) and a file an
//! executed file reads by a name of its own. Those show in the pull request's diff, and the
//! complete defence against them is the repository's, not the path list's: workflows that do not
//! hand secrets to branches they did not vet (environments with required reviewers, or
//! `pull_request` workflows without secrets).

/// Why a path is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{path}` is {reason}")]
pub struct Refusal {
    /// The path as given.
    pub path: String,
    /// The rule it breaks, readable in an issue comment.
    pub reason: &'static str,
}

/// CI configurations outside `.github/`.
const CI_FILES: &[&str] = &[
    ".gitlab-ci.yml",
    ".travis.yml",
    "Jenkinsfile",
    "azure-pipelines.yml",
    "bitbucket-pipelines.yml",
    ".drone.yml",
    "appveyor.yml",
    ".cirrus.yml",
];
const CI_DIRS: &[&str] = &[".github/", ".circleci/", ".buildkite/", ".gitlab/", ".woodpecker/"];
const LOCKFILES: &[&str] = &[
    "Cargo.lock",
    "package-lock.json",
    "npm-shrinkwrap.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "bun.lockb",
    "bun.lock",
    "poetry.lock",
    "Pipfile.lock",
    "uv.lock",
    "Gemfile.lock",
    "go.sum",
    "composer.lock",
    "mix.lock",
    "flake.lock",
    "Podfile.lock",
    "packages.lock.json",
];
const SECRET_NAMES: &[&str] = &[".npmrc", ".pypirc", ".netrc", ".pgpass", ".htpasswd", ".git-credentials"];
const SECRET_SUFFIXES: &[&str] =
    &[".pem", ".key", ".p12", ".pfx", ".jks", ".keystore", ".tfvars", ".tfstate"];

/// The path policy of coding jobs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathPolicy {
    /// Patterns an operator allowed despite the rules (`*` matches any run of characters,
    /// `/` included). Paths outside the repository are never allowed.
    pub allowed: Vec<String>,
}

impl PathPolicy {
    /// A policy allowing `allowed` (comma-separated patterns, as `SLIPWAY_JOB_ALLOWED_PATHS`).
    pub fn from_list(allowed: &str) -> Self {
        Self {
            allowed: allowed.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned).collect(),
        }
    }

    /// `Ok` if a job may create, edit or delete `path`.
    pub fn check(&self, path: &str) -> Result<(), Refusal> {
        let refuse = |reason| Err(Refusal { path: path.to_owned(), reason });
        if let Some(reason) = unsafe_spelling(path) {
            return refuse(reason);
        }
        if path.is_empty()
            || path.starts_with('/')
            || path.split('/').any(|s| s.is_empty() || s == "." || s == "..")
        {
            return refuse("not a relative path inside the repository");
        }
        if path.split('/').any(|s| s == ".git") {
            return refuse("inside the repository's .git directory");
        }
        if self.allowed.iter().any(|p| wildcard(p, path)) {
            return Ok(());
        }
        let name = path.rsplit('/').next().unwrap_or(path);
        let lower = name.to_ascii_lowercase();
        if CI_DIRS.iter().any(|d| path.starts_with(d)) || CI_FILES.contains(&name) {
            return refuse("CI configuration (it runs with the repository's secrets)");
        }
        if let Some(reason) = executed_by(path, &lower) {
            return refuse(reason);
        }
        if LOCKFILES.contains(&name) {
            return refuse("a lockfile (dependency changes are reviewed by people)");
        }
        if lower.starts_with(".env")
            || SECRET_NAMES.contains(&lower.as_str())
            || SECRET_SUFFIXES.iter().any(|s| lower.ends_with(s))
            || lower.starts_with("id_rsa")
            || lower.starts_with("id_ed25519")
            || lower.starts_with("id_ecdsa")
            || lower.contains("secret")
            || lower.contains("credential")
        {
            return refuse("a file that looks like it holds secrets");
        }
        Ok(())
    }

    /// Every refusal among `paths`.
    pub fn refusals<'a>(&self, paths: impl IntoIterator<Item = &'a str>) -> Vec<Refusal> {
        paths.into_iter().filter_map(|p| self.check(p).err()).collect()
    }
}

/// Files a tool runs by name, lowercased (CI runners are case-sensitive, a checkout on macOS or
/// Windows is not: both spellings are refused), each with the rule named in a refusal.
const EXECUTED_NAMES: &[(&[&str], &str)] = &[
    (
        &["action.yml", "action.yaml"],
        "executed by CI or builds (GitHub Actions runs a local action's action.yml, `uses: ./path`)",
    ),
    (
        &["gnumakefile", "makefile", "configure", "configure.ac", "cmakelists.txt"],
        "executed by CI or builds (make and the configure step run its commands)",
    ),
    (&["package.json"], "executed by CI or builds (npm runs package.json scripts on install and test)"),
    (&["composer.json"], "executed by CI or builds (Composer runs composer.json scripts on install)"),
    (
        &[".npmrc", ".yarnrc", ".yarnrc.yml", ".pnpmfile.cjs", ".pnpmfile.mjs"],
        "executed by CI or builds (it chooses what npm, Yarn or pnpm run on install)",
    ),
    (&["gulpfile.js", "gruntfile.js"], "executed by CI or builds (gulp and Grunt run it as code)"),
    (&["build.rs"], "executed by CI or builds (Cargo compiles and runs build.rs before the crate)"),
    (
        &["cargo.toml"],
        "executed by CI or builds (Cargo runs the build script and build-time dependencies a manifest names)",
    ),
    (
        &["setup.py", "pyproject.toml"],
        "executed by CI or builds (pip runs setup.py and the build backend pyproject.toml names)",
    ),
    (&["pipfile"], "executed by CI or builds (pip installs what it names, running their builds)"),
    (&["conftest.py"], "executed by CI or builds (pytest imports every conftest.py it collects)"),
    (&["noxfile.py", "tox.ini"], "executed by CI or builds (nox and tox run the sessions it defines)"),
    (
        &["sitecustomize.py", "usercustomize.py"],
        "executed by CI or builds (Python imports it at every start)",
    ),
    (
        &["dockerfile", "containerfile", "compose.yaml", "compose.yml"],
        "executed by CI or builds (Docker runs its RUN steps; Compose starts what it names)",
    ),
    (
        &["rakefile", "rakefile.rb"],
        "executed by CI or builds (rake loads the Rakefile and *.rake tasks as Ruby)",
    ),
    (
        &["gemfile", "gems.rb"],
        "executed by CI or builds (Bundler evaluates the Gemfile and gemspecs as Ruby)",
    ),
    (
        &[
            "gradlew",
            "gradlew.bat",
            "build.gradle",
            "build.gradle.kts",
            "settings.gradle",
            "settings.gradle.kts",
            "init.gradle",
            "init.gradle.kts",
            "gradle.properties",
            "gradle-wrapper.properties",
            "gradle-wrapper.jar",
        ],
        "executed by CI or builds (Gradle runs its wrapper and build scripts)",
    ),
    (&["pom.xml", "mvnw", "mvnw.cmd"], "executed by CI or builds (Maven runs the plugins pom.xml names)"),
    (
        &["build", "build.bazel", "workspace", "workspace.bazel", "module.bazel", ".bazelrc"],
        "executed by CI or builds (Bazel evaluates its build files and runs their rules)",
    ),
    (&["justfile", ".justfile"], "executed by CI or builds (just runs a justfile's recipes)"),
    (
        &["taskfile.yml", "taskfile.yaml", "taskfile.dist.yml", "taskfile.dist.yaml"],
        "executed by CI or builds (Task runs a Taskfile's commands)",
    ),
    (
        &[
            ".pre-commit-config.yaml",
            ".pre-commit-hooks.yaml",
            "lefthook.yml",
            "lefthook.yaml",
            ".lefthook.yml",
        ],
        "executed by CI or builds (pre-commit and lefthook run the hooks it names)",
    ),
    (&[".envrc"], "executed by CI or builds (direnv runs .envrc as a shell script)"),
];

/// Directories whose files tools run: (prefix of a path segment sequence, anywhere or top level
/// only, reason).
const EXECUTED_DIRS: &[(&str, bool, &str)] = &[
    ("scripts", true, SCRIPT_DIR),
    ("script", true, SCRIPT_DIR),
    ("ci", true, SCRIPT_DIR),
    (".ci", true, SCRIPT_DIR),
    // `src/bin/` is where Cargo keeps binaries' sources; only a top-level `bin/` holds scripts.
    ("bin", false, SCRIPT_DIR),
    (".husky", true, "executed by CI or builds (husky runs .husky/ scripts as Git hooks)"),
    (
        ".cargo",
        true,
        "executed by CI or builds (Cargo's .cargo/config.toml sets runners, wrappers and aliases)",
    ),
    (".mvn", true, "executed by CI or builds (.mvn/ chooses the Maven and options that run)"),
    ("buildsrc", true, "executed by CI or builds (Gradle compiles and runs buildSrc/)"),
    (".devcontainer", true, "executed by CI or builds (dev containers run devcontainer.json's commands)"),
];
const SCRIPT_DIR: &str =
    "executed by CI or builds (scripts/, script/, ci/ and bin/ hold what workflows and build files run)";
const SHELL: &str = "executed by CI or builds (a shell script, which workflows and build files call)";

/// The rule a file CI or a build executes breaks, or `None` (see the module docs for the list
/// and its sources). `lower` is the file name, lowercased.
fn executed_by(path: &str, lower: &str) -> Option<&'static str> {
    if let Some((_, reason)) = EXECUTED_NAMES.iter().find(|(names, _)| names.contains(&lower)) {
        return Some(reason);
    }
    let segments: Vec<String> = path.split('/').map(str::to_ascii_lowercase).collect();
    let dirs = &segments[..segments.len() - 1];
    for (dir, anywhere, reason) in EXECUTED_DIRS {
        let at =
            if *anywhere { dirs.iter().any(|d| d == dir) } else { dirs.first().is_some_and(|d| d == dir) };
        if at {
            return Some(reason);
        }
    }
    let ext = lower.rsplit_once('.').map_or("", |(_, e)| e);
    let stem = lower.rsplit_once('.').map_or(lower, |(s, _)| s);
    if matches!(ext, "sh" | "bash" | "zsh" | "ps1" | "bat" | "cmd") {
        return Some(SHELL);
    }
    if lower.starts_with("makefile") || matches!(ext, "mk" | "cmake") {
        return Some("executed by CI or builds (make and the configure step run its commands)");
    }
    if lower.starts_with("dockerfile.")
        || ext == "dockerfile"
        || (lower.starts_with("docker-compose") && matches!(ext, "yml" | "yaml"))
        || (lower.starts_with("compose.") && matches!(ext, "yml" | "yaml"))
    {
        return Some("executed by CI or builds (Docker runs its RUN steps; Compose starts what it names)");
    }
    if ext == "rake" {
        return Some("executed by CI or builds (rake loads the Rakefile and *.rake tasks as Ruby)");
    }
    if ext == "gemspec" {
        return Some("executed by CI or builds (Bundler evaluates the Gemfile and gemspecs as Ruby)");
    }
    if ext == "bzl" {
        return Some("executed by CI or builds (Bazel evaluates its build files and runs their rules)");
    }
    if lower.starts_with("requirements") && matches!(ext, "txt" | "in") {
        return Some("executed by CI or builds (pip installs what it names, running their builds)");
    }
    // `vite.config.ts`, `jest.config.js`, `.eslintrc.cjs`: JavaScript tools load them as code.
    let js = matches!(ext, "js" | "cjs" | "mjs" | "ts" | "cts" | "mts");
    if js && (stem.ends_with(".config") || (stem.starts_with('.') && stem.ends_with("rc"))) {
        return Some(
            "executed by CI or builds (JavaScript build and test tools load their config files as code)",
        );
    }
    None
}

/// Characters that look like `.` or `/` (or a run of dots) without being them: a path written
/// with them reads as an escape to a person, and some tool on the way may fold them into one.
const LOOKALIKES: &[char] = &[
    '\u{2024}', // ONE DOT LEADER
    '\u{2025}', // TWO DOT LEADER
    '\u{2026}', // HORIZONTAL ELLIPSIS
    '\u{FE52}', // SMALL FULL STOP
    '\u{FF0E}', // FULLWIDTH FULL STOP
    '\u{3002}', // IDEOGRAPHIC FULL STOP
    '\u{FF61}', // HALFWIDTH IDEOGRAPHIC FULL STOP
    '\u{2215}', // DIVISION SLASH
    '\u{2044}', // FRACTION SLASH
    '\u{FF0F}', // FULLWIDTH SOLIDUS
    '\u{29F8}', // BIG SOLIDUS
    '\u{2571}', // BOX DRAWINGS LIGHT DIAGONAL
    '\u{1735}', // PHILIPPINE SINGLE PUNCTUATION
    '\u{FE68}', // SMALL REVERSE SOLIDUS
    '\u{FF3C}', // FULLWIDTH REVERSE SOLIDUS
    '\u{29F5}', // REVERSE SOLIDUS OPERATOR
    '\u{29F9}', // BIG REVERSE SOLIDUS
];

/// Why `path` is spelled in a way that could mean another path once it is decoded, normalised
/// or put in a URL, or `None`. A planned path becomes a segment of a REST URL
/// (`/repos/{owner}/{repo}/contents/{path}`): `%2e%2e` is `..` to a URL parser, `?` and `#` end
/// the path, a backslash is a separator to some. None of these occurs in an ordinary source
/// path, so they are refused outright rather than interpreted.
fn unsafe_spelling(path: &str) -> Option<&'static str> {
    if path.contains('%') {
        return Some("percent-encoded (`%` can spell `..` or `/` once decoded)");
    }
    if path.contains('?') || path.contains('#') {
        return Some("not a plain path (`?` or `#` would end it in a URL)");
    }
    if path.contains('\\') {
        return Some("not a relative path inside the repository (a backslash is a separator to some tools)");
    }
    if path.chars().any(|c| c.is_control() || is_invisible(c)) {
        return Some("not a plain path (it holds control or invisible characters)");
    }
    if path.chars().any(|c| LOOKALIKES.contains(&c)) {
        return Some("not a plain path (it holds a look-alike of `.`, `/` or `\\`)");
    }
    None
}

/// Characters that print as nothing (or as a space) and are not a plain ASCII space: format
/// characters, zero-width and bidirectional controls, other spaces and separators.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00A0}' | '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{1680}'
        | '\u{17B4}' | '\u{17B5}' | '\u{180E}' | '\u{2000}'..='\u{200F}' | '\u{2028}'..='\u{202F}'
        | '\u{205F}'..='\u{206F}' | '\u{3000}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
        | '\u{FFA0}' | '\u{FFF0}'..='\u{FFFB}' | '\u{E0000}'..='\u{E007F}' | '\u{E0100}'..='\u{E01EF}')
}

/// `*` matches any run of characters (including `/`); everything else matches itself.
fn wildcard(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_source_files_are_allowed() {
        let p = PathPolicy::default();
        for path in [
            "README.md",
            "src/lib.rs",
            "docs/x.md",
            "docs/guide/intro.md",
            "app/page.tsx",
            "web/app/page.tsx",
            "src/bin/server.rs",
            "src/config.ts",
            "src/build/mod.rs",
            "lib/scripting.py",
            "docs/scripts.md",
            "assets/logo.svg",
            "config/settings.yml",
            "tests/test_api.py",
            "package.md",
        ] {
            assert_eq!(p.check(path), Ok(()), "{path}");
        }
    }

    /// One path of each family CI or a build executes, and the tool its refusal must name.
    const EXECUTED: &[(&str, &str)] = &[
        ("action.yml", "GitHub Actions"),
        ("tools/release/action.yaml", "GitHub Actions"),
        ("Makefile", "make"),
        ("makefile", "make"),
        ("GNUmakefile", "make"),
        ("sub/Makefile.am", "make"),
        ("build/rules.mk", "make"),
        ("CMakeLists.txt", "make"),
        ("cmake/deps.cmake", "make"),
        ("configure", "configure"),
        ("package.json", "npm runs package.json scripts"),
        ("web/package.json", "npm runs package.json scripts"),
        ("composer.json", "Composer"),
        (".npmrc", "npm"),
        (".yarnrc.yml", "Yarn"),
        (".pnpmfile.cjs", "pnpm"),
        ("vite.config.ts", "JavaScript"),
        ("web/jest.config.js", "JavaScript"),
        (".eslintrc.cjs", "JavaScript"),
        ("gulpfile.js", "gulp"),
        ("build.rs", "Cargo compiles and runs build.rs"),
        ("crates/core/build.rs", "Cargo compiles and runs build.rs"),
        ("Cargo.toml", "Cargo"),
        ("crates/core/Cargo.toml", "Cargo"),
        (".cargo/config.toml", "Cargo"),
        ("setup.py", "pip"),
        ("pyproject.toml", "pip"),
        ("requirements.txt", "pip"),
        ("requirements-dev.txt", "pip"),
        ("Pipfile", "pip"),
        ("conftest.py", "pytest"),
        ("tests/unit/conftest.py", "pytest"),
        ("noxfile.py", "nox"),
        ("tox.ini", "tox"),
        ("sitecustomize.py", "Python"),
        ("scripts/deploy.sh", "scripts/"),
        ("scripts/release.py", "scripts/"),
        ("web/scripts/build.js", "scripts/"),
        ("script/cibuild", "scripts/"),
        ("ci/run", "scripts/"),
        ("bin/setup", "scripts/"),
        ("install.sh", "shell script"),
        ("tools/x.bash", "shell script"),
        ("build.ps1", "shell script"),
        ("Dockerfile", "Docker"),
        ("deploy/Dockerfile.prod", "Docker"),
        ("api.Dockerfile", "Docker"),
        ("Containerfile", "Docker"),
        ("docker-compose.yml", "Compose"),
        ("docker-compose.override.yaml", "Compose"),
        ("compose.yaml", "Compose"),
        (".devcontainer/devcontainer.json", "dev containers"),
        ("Rakefile", "rake"),
        ("lib/tasks/db.rake", "rake"),
        ("Gemfile", "Bundler"),
        ("shop.gemspec", "Bundler"),
        ("gradlew", "Gradle"),
        ("build.gradle.kts", "Gradle"),
        ("settings.gradle", "Gradle"),
        ("gradle/wrapper/gradle-wrapper.properties", "Gradle"),
        ("buildSrc/src/main/kotlin/x.kt", "Gradle"),
        ("pom.xml", "Maven"),
        ("mvnw", "Maven"),
        (".mvn/jvm.config", "Maven"),
        ("BUILD.bazel", "Bazel"),
        ("tools/defs.bzl", "Bazel"),
        ("justfile", "just"),
        ("Justfile", "just"),
        ("Taskfile.yml", "Task"),
        (".pre-commit-config.yaml", "pre-commit"),
        ("lefthook.yml", "lefthook"),
        (".husky/pre-commit", "husky"),
        (".envrc", "direnv"),
    ];

    #[test]
    fn files_ci_or_builds_execute_are_refused_naming_the_tool() {
        let p = PathPolicy::default();
        for (path, tool) in EXECUTED {
            let refusal = p.check(path).expect_err(path);
            let said = refusal.to_string();
            assert!(said.contains("executed by CI or builds") && said.contains(tool), "{path}: {said}");
        }
    }

    #[test]
    fn an_operator_can_allow_an_executed_file() {
        let p = PathPolicy::from_list("scripts/*.sh, Makefile, */package.json, *build.rs, Cargo.toml");
        for path in
            ["scripts/deploy.sh", "Makefile", "web/package.json", "crates/core/build.rs", "Cargo.toml"]
        {
            assert_eq!(p.check(path), Ok(()), "{path}");
        }
        // Only what the patterns name: the rest of each family stays refused.
        for path in
            ["scripts/deploy.py", "sub/Makefile", "package.json", "crates/core/Cargo.toml", "conftest.py"]
        {
            assert!(p.check(path).is_err(), "{path}");
        }
        // Allowing everything allows every family, but never an escape.
        let all = PathPolicy::from_list("*");
        for (path, _) in EXECUTED {
            assert_eq!(all.check(path), Ok(()), "{path}");
        }
    }

    #[test]
    fn ci_lockfiles_secrets_and_escapes_are_refused() {
        let p = PathPolicy::default();
        for (path, why) in [
            (".github/workflows/deploy.yml", "CI"),
            (".github/CODEOWNERS", "CI"),
            (".gitlab-ci.yml", "CI"),
            ("ci/Jenkinsfile", "CI"),
            ("Cargo.lock", "lockfile"),
            ("web/package-lock.json", "lockfile"),
            (".env", "secrets"),
            (".env.production", "secrets"),
            ("deploy/server.pem", "secrets"),
            ("config/secrets.yml", "secrets"),
            ("aws_credentials", "secrets"),
            ("../outside.txt", "inside the repository"),
            ("/etc/passwd", "inside the repository"),
            ("src/../../x", "inside the repository"),
            ("a//b", "inside the repository"),
            (".git/config", ".git"),
            ("sub/.git/hooks/pre-commit", ".git"),
            ("", "inside the repository"),
        ] {
            let refusal = p.check(path).expect_err(path);
            assert!(refusal.to_string().contains(why), "{path}: {refusal}");
        }
    }

    #[test]
    fn spellings_that_could_mean_another_path_are_refused_with_their_reason() {
        let p = PathPolicy::from_list("*");
        for (path, why) in [
            ("x/%2e%2e/%2e%2e/other-repo/contents/secret.yml", "percent-encoded"),
            ("%2e%2e/x", "percent-encoded"),
            ("src%2flib.rs", "percent-encoded"),
            ("src/lib.rs%00", "percent-encoded"),
            ("src/lib.rs?ref=other", "`?` or `#`"),
            ("README.md#x", "`?` or `#`"),
            ("src\\..\\..\\x", "backslash"),
            ("src\\lib.rs", "backslash"),
            ("src/lib\0.rs", "control"),
            ("src/\nlib.rs", "control"),
            ("src/lib.rs\r", "control"),
            ("src/\u{7f}lib.rs", "control"),
            ("src/\u{85}lib.rs", "control"),
            ("src/\u{200b}lib.rs", "invisible"),
            ("src/\u{202e}sr.bil", "invisible"),
            ("src/\u{feff}lib.rs", "invisible"),
            ("src/lib\u{a0}.rs", "invisible"),
            ("x/\u{2024}\u{2024}/y", "look-alike"),
            ("x/\u{2025}/y", "look-alike"),
            ("x/\u{ff0e}\u{ff0e}/y", "look-alike"),
            ("x/\u{fe52}\u{fe52}/y", "look-alike"),
            ("x\u{2215}..\u{2215}y", "look-alike"),
            ("x\u{2044}y", "look-alike"),
            ("x\u{ff0f}y", "look-alike"),
            ("x\u{ff3c}y", "look-alike"),
            ("/etc/passwd", "inside the repository"),
            ("a//b", "inside the repository"),
            ("a/", "inside the repository"),
            ("./a", "inside the repository"),
            ("a/./b", "inside the repository"),
            ("a/..", "inside the repository"),
            ("..", "inside the repository"),
        ] {
            let refusal = p.check(path).expect_err(path);
            assert!(refusal.to_string().contains(why), "{path:?}: {refusal}");
        }
        // Ordinary names with dots, dashes and non-ASCII letters stay allowed.
        for path in ["docs/v1.2/notes.md", "a/.hidden/b.txt", "i18n/café.md", "src/...rs", "x/..y/z"] {
            assert_eq!(PathPolicy::default().check(path), Ok(()), "{path}");
        }
    }

    #[test]
    fn an_operator_can_allow_a_protected_path_but_never_an_escape() {
        let p = PathPolicy::from_list(" .github/workflows/*.yml , Cargo.lock,");
        assert_eq!(p.allowed, [".github/workflows/*.yml", "Cargo.lock"]);
        assert_eq!(p.check(".github/workflows/ci.yml"), Ok(()));
        assert_eq!(p.check("Cargo.lock"), Ok(()));
        assert!(p.check(".github/dependabot.yml").is_err());
        assert!(PathPolicy::from_list("*").check("../x").is_err());
        assert!(PathPolicy::from_list("*").check(".git/config").is_err());
    }

    #[test]
    fn wildcards_match_runs_of_characters() {
        assert!(wildcard("a*c", "abbbc") && wildcard("*", "x/y") && wildcard("a*b*c", "a-b-c"));
        assert!(!wildcard("a*c", "ab") && !wildcard("abc", "abcd") && !wildcard("a*b*c", "acb"));
    }
}
