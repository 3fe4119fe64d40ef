import pytest

from tests.conftest import REPO
from tuner.config import load_space
from tuner.errors import UserError
from tuner.search.space import check_space

PRODUCT_DIMENSIONS = {"backbone", "class_weight", "dropout", "input_size", "transfer"}


@pytest.mark.parametrize(
    "path", sorted((REPO / "search_spaces").glob("*.yaml")), ids=lambda p: p.stem
)
def test_presets_load_and_check(path):
    space = load_space(path)
    check_space(space, str(path))


def test_quick_names_the_five_product_dimensions():
    space = load_space(REPO / "search_spaces" / "quick.yaml")
    assert PRODUCT_DIMENSIONS <= set(space.space)


def _write(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def _checked(path):
    check_space(load_space(path), str(path))


BASE = "name: t\nspace:\n  backbone: {type: categorical, choices: [resnet18]}\n"


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: t\nspace: [oops", "is not valid YAML"),
        ("- a\n- b\n", "expected a mapping"),
        (BASE + "trails: 3\n", "trails: unknown key; allowed: name, description"),
        (
            "name: t\nspace:\n  dropout: {type: uniform, low: 0, high: 1}\n",
            "space.dropout: unknown dimension type",
        ),
        (
            "name: t\nspace:\n  dropout: {type: float, low: 0.5, high: 0.1}\n",
            "space.dropout: low (0.5) must be below high",
        ),
        ("name: t\nspace: {}\n", "space:"),
        (
            "name: t\nspace:\n  lr: {type: float, low: 0.001, high: 0.01, lg: true}\n",
            "space.lr.lg: unknown key; allowed: type, low, high, log, when",
        ),
        (
            "name: t\nspace:\n  backbone: {type: categorical, choices: []}\n",
            "space.backbone.choices: empty choice list",
        ),
        (
            BASE + "  lr: {type: log-float, low: 0.001, high: 0.1, when: {trnsfer: [imagenet]}}\n",
            "space.lr.when.trnsfer: condition on unknown dimension 'trnsfer'; dimensions: "
            "backbone, lr",
        ),
        (
            BASE + "  lr: {type: log-float, low: 0.001, high: 0.1, when: {backbone: [vgg19]}}\n",
            "space.lr.when.backbone: 'vgg19' is not a choice of backbone; allowed: resnet18",
        ),
        (
            BASE + "  lr: {type: log-float, low: 0, high: 0.1}\n",
            "space.lr: a log range needs low > 0",
        ),
        (
            "name: t\nspace:\n"
            "  a: {type: categorical, choices: [1, 2], when: {b: [1]}}\n"
            "  b: {type: categorical, choices: [1, 2], when: {a: [1]}}\n",
            "conditions form a cycle among a, b",
        ),
        (BASE + "fixed: {backbone: resnet18}\n", "backbone both fixed and searched; keep one"),
        (BASE + "resources: {cpu: 1, gpu: 1.5}\n", "resources.gpu: gpu 1.5: use a fraction"),
    ],
)
def test_schema_errors_name_the_file_and_key(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(UserError) as info:
        load_space(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "name: t\nspace:\n  backbone: {type: categorical, choices: [resnet18, resnet5]}\n",
            "space.backbone.choices[1]: unknown backbone 'resnet5'; allowed: densenet121",
        ),
        (
            "name: t\nspace:\n  backbone: {type: categorical, choices: [resnet18, resnet5]}\n",
            "did you mean",
        ),
        (
            "name: t\nspace:\n  transfer: {type: categorical, choices: [imagenet, imagenets]}\n",
            "unknown transfer 'imagenets'",
        ),
        (BASE + "fixed: {optimizer: sgd}\n", "fixed.optimizer: unknown setting 'optimizer'"),
        (BASE + "fixed: {dropout: 1.5}\n", "fixed.dropout: dropout 1.5 must be in [0, 1)"),
        (BASE + "task: cancer\n", "task: unknown task 'cancer'"),
        (BASE + "metric: val_auc\n", "metric: unknown metric 'val_auc'; allowed: val_roc_auc"),
        (
            "name: t\nspace:\n  class_weight: {type: categorical, choices: [none, heavy]}\n",
            "unknown class_weight 'heavy'",
        ),
        (
            "name: t\nfixed: {input_size: 48}\n"
            "space:\n  backbone: {type: categorical, choices: [inception_v3]}\n",
            "needs inputs of at least 75 px",
        ),
        (
            "name: t\nview: whole\nfixed: {input_size: 96}\n"
            "space:\n  backbone: {type: categorical, choices: [inception_v3]}\n",
            "input_size may be 96 (64 px on its short side",
        ),
        (
            "name: t\nfixed: {input_size: 128, max_backbone_size: 32}\n"
            "space:\n  backbone: {type: categorical, choices: [inception_v3]}\n",
            "(32 px on its short side at the backbone)",
        ),
        (
            "name: t\nspace:\n  input_size: {type: float, low: 32, high: 64}\n",
            "space.input_size: input_size is a whole number; use type: int",
        ),
        (
            "name: t\nspace:\n  backbone: {type: int, low: 1, high: 3}\n",
            "space.backbone: backbone takes type: categorical",
        ),
        (
            "name: t\nspace:\n  transfer: {type: categorical, choices: [mias]}\n",
            "unknown transfer 'mias'; allowed: mias_all, imagenet_mias_head, imagenet, random",
        ),
        (
            "name: t\nspace:\n  class_weight: {type: categorical, choices: [minority_x]}\n",
            "minority_x<F>",
        ),
        (BASE + "fixed: {precision: fp8}\n", "fixed.precision: Input should be"),
        (BASE + "fixed: {finetune_lr_factor: 2}\n", "finetune_lr_factor 2.0 must be in (0, 1]"),
    ],
)
def test_semantic_errors_name_the_key_and_allowed_values(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(UserError) as info:
        _checked(path)
    assert message in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_space(tmp_path / "none.yaml")
