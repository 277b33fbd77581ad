//! SqueezeNet 1.0 and 1.1 (torchvision layout: `features.0` the stem convolution, max pools
//! of 3x3 stride 2 with `ceil_mode=True`, Fire modules `features.N.squeeze`,
//! `.expand1x1`, `.expand3x3`, all with bias and ReLU; `classifier.1` a 1x1 convolution).
//!
//! torchvision's classifier is Dropout, the 1x1 convolution to the classes, ReLU and a
//! global average pool: no Linear. Its logits are `avgpool(relu(conv1x1(x)))`, which a
//! Linear on the pooled map cannot give (the ReLU comes before the pool), so the loaded
//! network keeps the origin's form: the output layer runs on the last map
//! ([`ClassifierSpec::conv_on_map`]). The embedding is the classifier's input pooled: the
//! last Fire module's output, global-average-pooled (512-d). A new head for the user's
//! classes is a Linear on that embedding, as for every other family (a bundle stores it
//! 2-D under `classifier.1`, which is how the loader tells it from the origin's 4-D
//! convolution).

use serde::{Deserialize, Serialize};

use super::family::{ClassifierSpec, Family, StageInfo, StageList};
use super::layers::{Act, Block, BnSpec, Concat, ConvBnAct, ConvSpec, Pad, max_pool_ceil};
use super::loader::WeightLoader;
use super::network::Stage;
use super::{Interpolation, Preprocess, ZooEntry, torchvision_file};

/// torchvision's two versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SqueezeNetVersion {
    #[serde(rename = "1_0")]
    V1_0,
    #[serde(rename = "1_1")]
    V1_1,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SqueezeNetConfig {
    pub version: SqueezeNetVersion,
    /// Every width of torchvision's network divided by this (at least 1 channel each): 1
    /// for torchvision's; reduced variants (fixtures) use more.
    #[serde(default = "one")]
    pub width_divisor: usize,
}

fn one() -> usize {
    1
}

/// One step of `features` after the stem convolution.
#[derive(Clone, Copy)]
enum Step {
    Pool,
    /// (squeeze, expand) widths: the module outputs twice `expand`.
    Fire(usize, usize),
}

use Step::{Fire, Pool};

impl SqueezeNetConfig {
    pub fn torchvision(version: SqueezeNetVersion) -> Self {
        Self {
            version,
            width_divisor: 1,
        }
    }

    fn width(&self, w: usize) -> usize {
        (w / self.width_divisor.max(1)).max(1)
    }

    /// (stem channels, kernel) and the steps after it, `features.2` onwards
    /// (`features.1` is the stem's ReLU).
    fn layout(&self) -> ((usize, usize), Vec<Step>) {
        match self.version {
            SqueezeNetVersion::V1_0 => (
                (96, 7),
                vec![
                    Pool,
                    Fire(16, 64),
                    Fire(16, 64),
                    Fire(32, 128),
                    Pool,
                    Fire(32, 128),
                    Fire(48, 192),
                    Fire(48, 192),
                    Fire(64, 256),
                    Pool,
                    Fire(64, 256),
                ],
            ),
            SqueezeNetVersion::V1_1 => (
                (64, 3),
                vec![
                    Pool,
                    Fire(16, 64),
                    Fire(16, 64),
                    Pool,
                    Fire(32, 128),
                    Fire(32, 128),
                    Pool,
                    Fire(48, 192),
                    Fire(48, 192),
                    Fire(64, 256),
                    Fire(64, 256),
                ],
            ),
        }
    }

    /// torchvision's steps with their index in `features`.
    fn steps(&self) -> Vec<(usize, Step)> {
        let (_, steps) = self.layout();
        steps
            .into_iter()
            .enumerate()
            .map(|(i, s)| (i + 2, s))
            .collect()
    }

    /// (name, channels, stride) of each stage: the stem (convolution and the pool after it),
    /// then one stage per Fire module (`fire2` … `fire9`, the paper's names), a max pool
    /// ending the stage before it.
    fn stage_plan(&self) -> Vec<(String, usize, usize)> {
        let ((stem, _), _) = self.layout();
        let mut plan = vec![("stem".to_owned(), self.width(stem), 2)];
        let mut fire = 1;
        for (_, step) in self.steps() {
            match step {
                Pool => plan.last_mut().expect("stem").2 *= 2,
                Fire(_, e) => {
                    fire += 1;
                    plan.push((format!("fire{fire}"), 2 * self.width(e), 1));
                }
            }
        }
        plan
    }
}

impl Family for SqueezeNetConfig {
    fn stages(&self) -> Vec<StageInfo> {
        self.stage_plan()
            .into_iter()
            .fold(StageList::new(), |list, (name, c, s)| list.then(name, c, s))
            .done()
    }

    fn feature_dim(&self) -> usize {
        self.stage_plan().last().map_or(0, |s| s.1)
    }

    fn classifier(&self) -> ClassifierSpec {
        ClassifierSpec::conv_on_map("classifier.1")
    }

    fn batchnorm(&self) -> Option<BnSpec> {
        None
    }

    fn naming_key(&self) -> &'static str {
        "features.3.squeeze.weight"
    }

    fn build_stages(&self, l: &WeightLoader) -> Vec<Stage> {
        let ((stem, k), _) = self.layout();
        let stem = self.width(stem);
        let conv = |name: String, spec: ConvSpec| {
            Block::Conv(ConvBnAct::load_plain(l, &name, spec, Act::Relu))
        };
        let mut stages = vec![Stage {
            blocks: vec![conv(
                "features.0".into(),
                ConvSpec::new(3, stem, k, 2).pad(Pad::Fixed(0)),
            )],
        }];
        let mut inp = stem;
        for (idx, step) in self.steps() {
            match step {
                Pool => {
                    let last = stages.last_mut().expect("the stem");
                    last.blocks.push(max_pool_ceil(3, 2, 0));
                }
                Fire(s, e) => {
                    let (s, e) = (self.width(s), self.width(e));
                    let p = format!("features.{idx}");
                    stages.push(Stage {
                        blocks: vec![
                            conv(format!("{p}.squeeze"), ConvSpec::new(inp, s, 1, 1)),
                            Block::Concat(Concat::new(vec![
                                vec![conv(format!("{p}.expand1x1"), ConvSpec::new(s, e, 1, 1))],
                                vec![conv(format!("{p}.expand3x3"), ConvSpec::new(s, e, 3, 1))],
                            ])),
                        ],
                    });
                    inp = 2 * e;
                }
            }
        }
        stages
    }

    fn entries() -> Vec<ZooEntry> {
        [
            (
                "squeezenet1_0",
                SqueezeNetVersion::V1_0,
                "squeezenet1_0-b66bff10.pth",
            ),
            (
                "squeezenet1_1",
                SqueezeNetVersion::V1_1,
                "squeezenet1_1-b8a52dc0.pth",
            ),
        ]
        .into_iter()
        .map(|(name, version, file)| {
            ZooEntry::new(
                name,
                "torchvision",
                Self::torchvision(version),
                Preprocess::imagenet(256, 224, Interpolation::Bilinear),
            )
            .published(torchvision_file(file))
        })
        .collect()
    }
}
