"""Numbers worked out on paper: interval levels and percentiles, exact intervals of imperfect
results (every denominator differs), stratification, operating points, class weights from a
pipeline's own counts, the resume rule for every setting, and the best-checkpoint tie. A one-line
slip in any of them (a 90% interval for a 95% one, a swapped denominator) fails here."""

import pathlib

import numpy as np
import pytest

from conftest import copy_subset
from radjax.data import folds as folds_lib
from radjax.training import cross_validation as cv_lib
from radjax.configs import default
from radjax.data import files, listing
from radjax.metrics import classification as metrics
from radjax.training import config as config_lib
from radjax.training import explanation


def test_percentile_intervals_take_the_levels_tails_with_linear_interpolation():
  # 1,000 resamples whose figure is the resample's number 0..999: the 95% interval is the 2.5th
  # and 97.5th percentiles, 24.975 and 974.025 (NumPy's linear rule); the 90% one 49.95, 949.05.
  counter = iter(range(10**6))

  def score(indices):
    values = np.array([next(counter) for _ in range(len(indices))], float)
    return {name: values for name in metrics.INTERVAL_METRICS}

  def draw(rng, count):
    return np.zeros((count, 1), int)

  ninety_five = metrics._percentile_intervals(draw, score, 1000, 0.95, seed=0)
  assert ninety_five["auc"] == pytest.approx([24.975, 974.025])
  counter = iter(range(10**6))
  ninety = metrics._percentile_intervals(draw, score, 1000, 0.90, seed=0)
  assert ninety["accuracy"] == pytest.approx([49.95, 949.05])


def test_the_default_bootstrap_interval_is_95_percent():
  rng = np.random.default_rng(0)
  labels = np.repeat([0, 1], 20)
  logits = rng.normal(labels * 1.0, 1.0)
  default_level = metrics.bootstrap_intervals(logits, labels, seed=3)
  assert default_level == metrics.bootstrap_intervals(logits, labels, seed=3, level=0.95)
  narrower = metrics.bootstrap_intervals(logits, labels, seed=3, level=0.90)
  assert default_level["auc"][0] < narrower["auc"][0] and narrower["auc"][1] < default_level["auc"][1]
  # accuracy takes 41 values: its ends may coincide, but the 90% interval never reaches further
  assert default_level["accuracy"][0] <= narrower["accuracy"][0]
  assert narrower["accuracy"][1] <= default_level["accuracy"][1]


def test_exact_intervals_of_an_imperfect_result_use_each_proportions_own_counts():
  # tn 4, fp 2, fn 1, tp 3: accuracy 7/10, sensitivity 3/4, specificity 4/6. Clopper-Pearson 95%
  # (beta quantiles; the same as R's binom.test): 7/10 0.3475-0.9333, 3/4 0.1941-0.9937,
  # 4/6 0.2228-0.9567.
  result = {"confusion_matrix": [[4, 2], [1, 3]]}
  exact = metrics.exact_intervals(result)
  assert exact["accuracy"] == pytest.approx([0.347547, 0.933260], abs=1e-6)
  assert exact["sensitivity"] == pytest.approx([0.194120, 0.993691], abs=1e-6)
  assert exact["specificity"] == pytest.approx([0.222778, 0.956728], abs=1e-6)
  assert metrics.exact_intervals(result, level=0.90)["accuracy"] == pytest.approx(
      [0.393376, 0.912736], abs=1e-6)
  # binary_metrics' matrix is [[tn, fp], [fn, tp]] for these logits and labels
  logits = np.array([-1, -1, -1, -1, 1, 1, -1, 1, 1, 1], float)
  labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
  assert metrics.binary_metrics(logits, labels)["confusion_matrix"] == [[4, 2], [1, 3]]


def test_operating_point_by_hand_with_ties_in_youdens_j():
  # Positives at 0, 2, 3; negatives at -2, -1, 1. Cuts halfway between scores: J is 2/3 at -0.5
  # (sensitivity 1, specificity 2/3) and at 1.5 (2/3, 1): the tie goes to the lower threshold.
  logits = np.array([-2.0, -1.0, 0.0, 1.0, 2.0, 3.0])
  labels = np.array([0, 0, 1, 0, 1, 1])
  point = metrics.operating_point(logits, labels)
  assert point["threshold_logit"] == -0.5
  assert (point["sensitivity"], point["specificity"]) == (1.0, pytest.approx(2 / 3))
  # Sensitivity >= 0.6: the highest threshold reaching it is 1.5 (2/3, specificity 1).
  point = metrics.operating_point(logits, labels, target_sensitivity=0.6)
  assert point["threshold_logit"] == 1.5
  assert (point["sensitivity"], point["specificity"]) == (pytest.approx(2 / 3), 1.0)
  at = metrics.binary_metrics(logits, labels, point["threshold_logit"])
  assert at["confusion_matrix"] == [[3, 0], [1, 2]]


def test_multilabel_folds_are_stratified_by_each_images_rarest_positive_label():
  # Positives per label: a 4, b 2, c 1. Rarest first: c, b, a; no positive: 3.
  labels = [[1, 0, 0], [1, 1, 0], [1, 1, 1], [0, 0, 0], [1, 0, 0], [-1, 0, 0]]
  assert folds_lib.stratification_labels(labels, 3) == [0, 1, 2, 3, 0, 3]
  assert folds_lib.stratification_labels([0, 1, 1], 2) == [0, 1, 1]  # classes: their own label


def test_balanced_class_weights_come_from_the_pipelines_own_training_counts(dataset_dir,
                                                                            tmp_path):
  # 5 abd and 3 chest training images: n / (classes * n_c) = 8 / 10 and 8 / 6.
  root = copy_subset(dataset_dir, tmp_path / "d", {"TRAIN": 5, "VAL": 1})
  for extra in sorted((root / "TRAIN" / "chest").glob("*.png"))[3:]:
    extra.unlink()
  config = default.get_config()
  config.class_weight, config.image_size = "balanced", 75
  pipeline = files.Pipeline(listing.list_folders(root), config)
  np.testing.assert_allclose(pipeline.class_weights, [0.8, 8 / 6], rtol=1e-6)
  config.class_weight = "1,3"
  assert files.Pipeline(listing.list_folders(root), config).class_weights.tolist() == [1.0, 3.0]


MUST_MATCH = {"image_size": 150, "resize": "pad", "resize_method": "nearest",
              "value_range": "unit", "dicom_voi": "window", "crop_borders": "auto",
              "hidden_units": 128}
MAY_CHANGE = {"learning_rate": 1e-3, "batch_size": 10, "dtype": "bfloat16", "fine_tune": "head",
              "augment.zoom_range": 0.1, "augment.enabled": False, "precise_bn": False, "seed": 3,
              "loss": "focal", "label_smoothing": 0.1, "mixup_alpha": 0.2, "class_weight": "1,2",
              "dropout_rate": 0.3, "augment_on": "device", "sampling": "balanced"}
NOT_COMPARED = {"num_epochs": 40, "compilation_cache": "", "keep_checkpoints": 1,
                "distributed": True, "weights": "none", "data_dir": "/elsewhere",
                "precise_bn_cache_mb": 1, "precise_bn_images_per_call": 7}


def _changed(name, value):
  config = default.get_config()
  node = config
  *parents, leaf = name.split(".")
  for part in parents:
    node = node[part]
  before = node[leaf]
  node[leaf] = value
  return config, before


@pytest.mark.parametrize("name", [*MUST_MATCH, *MAY_CHANGE, *NOT_COMPARED])
def test_the_resume_rule_for_every_kind_of_setting(name):
  value = {**MUST_MATCH, **MAY_CHANGE, **NOT_COMPARED}[name]
  config, before = _changed(name, value)
  forbidden, allowed = config_lib.resume_changes(default.get_config().to_dict(), config)
  if name in MUST_MATCH:
    assert forbidden == {name: [before, value]} and allowed == {}
  elif name in MAY_CHANGE:
    assert forbidden == {} and allowed == {name: [before, value]}
  else:
    assert forbidden == {} and allowed == {}


def test_explain_maps_a_padded_input_back_onto_the_film_as_stored():
  """A 100 x 50 film padded to 80 x 80 sits in columns 20-59 (scale 0.8: 80 x 40). A map that is
  1 on the film's left half and 0 elsewhere (padding included) must come back as 1 on the left
  half of the original and 0 on its right half; squash would smear in the padding's zeros."""

  config = default.get_config()
  config.image_size, config.resize = 80, "pad"
  heatmap = np.zeros((80, 80), np.float32)
  heatmap[:, 20:40] = 1.0  # the film's left half
  back = explanation.to_original(heatmap, 100, 50, config)
  assert back.shape == (100, 50)
  np.testing.assert_allclose(back[:, :23], 1.0, atol=1e-6)  # away from the bilinear seam
  np.testing.assert_allclose(back[:, 27:], 0.0, atol=1e-6)
  config.resize = "squash"  # the same map read as squashed: columns 20-39 of 80 are 12.5-25 of 50
  squashed = explanation.to_original(heatmap, 100, 50, config)
  np.testing.assert_allclose(squashed[:, :11], 0.0, atol=1e-6)
  np.testing.assert_allclose(squashed[:, 14:23], 1.0, atol=1e-6)


def test_held_out_images_are_scored_by_each_folds_final_epoch_not_its_best(dataset_dir, tmp_path,
                                                                            monkeypatch):
  """The best checkpoint was chosen on the held-out images themselves: scoring them with it
  would flatter the cross-validated figures."""
  from radjax.training import loop, run as run_lib

  asked = []

  class Stop(Exception):
    pass

  def load(workdir, which="best"):
    asked.append(which)
    raise Stop

  monkeypatch.setattr(run_lib, "load", load)
  with pytest.raises(Stop):
    cv_lib.held_out_predictions(tmp_path, 7)
  assert asked == ["7"]
  # run_fold asks for the config's last epoch
  data = copy_subset(dataset_dir, tmp_path / "d", {"TRAIN": 3, "VAL": 1})
  plan = folds_lib.make_plan(data, 2, [0])
  config = config_lib.load_config("smoke", ["--config.num_epochs=3"], device_count=1)
  monkeypatch.setattr(loop, "train_and_evaluate",
                      lambda config, workdir: pathlib.Path(workdir).mkdir(parents=True))
  monkeypatch.setattr(cv_lib, "held_out_predictions", lambda fold_dir, epoch: {"epoch": epoch})
  assert cv_lib.run_fold(config, tmp_path / "cv", plan, 0, 1) == {"epoch": 3}
