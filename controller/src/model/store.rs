//! Where the desired state is kept between daemons: `/var/lib/xnic/<instance>/`.
//!
//! - `desired.toml`: the desired state, as a configuration file (it is one: `xnic run
//!   --config` accepts it);
//! - `source.toml`: the daemon's configuration file as it was when it last replaced the
//!   desired state (at a first start, by `xnic apply` of that file, or by SIGHUP);
//! - `state.json`: the generation and which file that was.
//!
//! The rule a restart follows: while the configuration file is unchanged since it was last
//! applied, the kept desired state wins, so every change made at run time survives; once the
//! file has been edited, the file wins (as if applied), and the log says what it replaced.
//! Files are replaced atomically (written aside, synced, renamed).

use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use xnic_proto::config::Config;

/// What is kept.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    pub config: Config,
    pub generation: u64,
    /// The configuration file and its text when it last replaced the desired state.
    pub source: Option<(PathBuf, String)>,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    generation: u64,
    #[serde(default)]
    source_file: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

impl Store {
    pub fn new(instance: &str) -> Store {
        Store {
            dir: Path::new(crate::STATE_DIR).join(instance),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn desired_file(&self) -> PathBuf {
        self.dir.join("desired.toml")
    }

    /// What an earlier daemon kept, if anything.
    pub fn load(&self) -> anyhow::Result<Option<Stored>> {
        let meta_path = self.dir.join("state.json");
        let meta: Meta = match std::fs::read_to_string(&meta_path) {
            Ok(text) => serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is damaged; remove {} to start from the configuration file",
                    meta_path.display(),
                    self.dir.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", meta_path.display()));
            }
        };
        let desired = self.desired_file();
        let config = crate::config::load(&desired).map_err(|e| {
            anyhow::anyhow!(
                "{e}\nthe desired state kept in {} no longer validates; remove that directory to start from the configuration file",
                self.dir.display()
            )
        })?;
        let source = match (
            &meta.source_file,
            std::fs::read_to_string(self.dir.join("source.toml")),
        ) {
            (Some(file), Ok(text)) => Some((file.clone(), text)),
            _ => None,
        };
        Ok(Some(Stored {
            config,
            generation: meta.generation,
            source,
        }))
    }

    /// Keeps `stored`; `desired.toml` is written last, so a crash half-way leaves the earlier
    /// state whole or the new one whole. `source.toml` is rewritten only when
    /// `source_changed` (a first start, `apply` of the file, SIGHUP): a runtime change leaves
    /// it as it was.
    pub fn save(
        &self,
        config: &Config,
        generation: u64,
        source: Option<&(PathBuf, String)>,
        source_changed: bool,
    ) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let text = toml::to_string(config).context("cannot write the desired state as TOML")?;
        let header = "# The desired state of this xnic instance, kept by the daemon across restarts.\n\
                      # Change it with `xnic vm ...`, `xnic rss ...` or `xnic apply --config FILE`.\n\n";
        if source_changed && let Some((_, text)) = source {
            write_atomically(&self.dir.join("source.toml"), text)?;
        }
        let meta = Meta {
            generation,
            source_file: source.map(|(file, _)| file.clone()),
        };
        write_atomically(
            &self.dir.join("state.json"),
            &serde_json::to_string_pretty(&meta)?,
        )?;
        write_atomically(&self.desired_file(), &format!("{header}{text}"))
    }

    /// Forgets everything kept (`xnic down`).
    pub fn remove(&self) -> anyhow::Result<()> {
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove {}", self.dir.display())),
        }
    }
}

/// Which desired state a daemon starting from `file` (whose text is `text`, parsed as
/// `config`) takes, given what was kept. Returns it, its generation, and a note for the log
/// when the file replaced a kept state.
pub fn choose(
    kept: Option<Stored>,
    file: &Path,
    text: &str,
    config: Config,
) -> (Stored, Option<String>) {
    let source = Some((file.to_path_buf(), text.to_string()));
    match kept {
        None => (
            Stored {
                config,
                generation: 1,
                source,
            },
            None,
        ),
        Some(k)
            if k.source
                .as_ref()
                .is_some_and(|(f, t)| f == file && t == text) =>
        {
            (k, None)
        }
        Some(k) => {
            let why = match &k.source {
                Some((f, _)) if f != file => format!(
                    "the daemon now starts from {} (it last applied {})",
                    file.display(),
                    f.display()
                ),
                _ => format!("{} changed since it was last applied", file.display()),
            };
            (
                Stored {
                    config,
                    generation: k.generation + 1,
                    source,
                },
                Some(why),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(prio: i32) -> Config {
        crate::config::parse(
            &format!(
                "instance = \"t\"\n[[uplink]]\nname = \"eth0\"\n[[team]]\nname = \"t\"\nuplinks = [\"eth0\"]\n[[vm]]\nname = \"vm0\"\nport = \"tap0\"\nmacs = [\"02:00:00:00:00:01\"]\npriority = {prio}\nbandwidth_mbps = 20.5\nteam_policy = \"mac-hash\"\n"
            ),
            Path::new("t.toml"),
        )
        .unwrap()
    }

    #[test]
    fn a_kept_state_wins_until_the_file_changes() {
        let file = Path::new("/etc/xnic/t.toml");
        let (first, note) = choose(None, file, "A", config(0));
        assert_eq!((first.generation, note), (1, None));
        // Changed at run time, then restarted with the same file: the kept state wins.
        let mut kept = first.clone();
        kept.config = config(5);
        kept.generation = 4;
        let (s, note) = choose(Some(kept.clone()), file, "A", config(0));
        assert_eq!((s.config.vms[0].priority, s.generation, note), (5, 4, None));
        // The file was edited: it wins.
        let (s, note) = choose(Some(kept), file, "B", config(1));
        assert_eq!((s.config.vms[0].priority, s.generation), (1, 5));
        assert!(note.unwrap().contains("changed since it was last applied"));
    }

    #[test]
    fn the_desired_state_round_trips_through_its_files() {
        let dir = std::env::temp_dir().join(format!("xnic-store-{}", std::process::id()));
        let store = Store { dir: dir.clone() };
        let stored = Stored {
            config: config(3),
            generation: 9,
            source: Some((PathBuf::from("/etc/xnic/t.toml"), "text".into())),
        };
        store
            .save(
                &stored.config,
                stored.generation,
                stored.source.as_ref(),
                true,
            )
            .unwrap();
        assert_eq!(store.load().unwrap(), Some(stored));
        store.remove().unwrap();
        assert_eq!(store.load().unwrap(), None);
        assert!(!dir.exists());
    }
}
