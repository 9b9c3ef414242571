"""`radjax.metrics.robustness` worked out by hand at its edges: a logit exactly at the cut is not
above it, a multiclass tie goes to the first class, a multiclass change is of the clean image's
class, a multilabel image's figures are the means over its own labels, and `condition` reports the
figures `radjax evaluate` computes, with the seed and the operating point it is given.

The probabilities are chosen to be exact: sigmoid(log 3) = 3/4, softmax(log 3, 0, 0) = (3/5, 1/5,
1/5), softmax(log 2, 0, 0) = (1/2, 1/4, 1/4)."""

import math

import numpy as np
import pytest

from radjax.metrics import classification, robustness

LN2, LN3 = math.log(2.0), math.log(3.0)


def test_a_binary_logit_exactly_at_the_cut_is_not_above_it():
  logits = np.array([-0.5, 0.0, 0.5, 1.0])
  assert robustness.decisions(logits, "binary").tolist() == [False, False, True, True]
  assert robustness.decisions(logits, "binary", 0.5).tolist() == [False, False, False, True]
  assert robustness.decisions(logits, "binary", -0.5).tolist() == [False, True, True, True]


def test_multilabel_decisions_take_each_labels_own_cut_or_one_for_all():
  logits = np.array([[0.0, 1.0, 2.0], [0.5, 1.5, -2.0]])
  cuts = np.array([0.0, 1.0, -2.0])  # each at one of its label's logits: that one is not above
  assert robustness.decisions(logits, "multilabel", cuts).tolist() == [
      [False, False, True], [True, True, False]]
  assert robustness.decisions(logits, "multilabel", 1.0).tolist() == [
      [False, False, True], [False, True, False]]


def test_a_multiclass_decision_is_each_images_most_probable_class_ties_to_the_first():
  logits = np.array([[0.0, 2.0, 1.0], [1.0, 1.0, 0.0]])  # 2 images x 3 classes
  assert robustness.decisions(logits, "multiclass").tolist() == [1, 0]
  # A threshold means nothing to a multiclass decision.
  assert robustness.decisions(logits, "multiclass", 5.0).tolist() == [1, 0]


def test_the_decided_probability_is_the_positive_class_or_the_clean_images_class():
  np.testing.assert_allclose(
      robustness.decided_probability([LN3, 0.0, -LN3], "binary", [0.0, 0.0, 0.0]),
      [0.75, 0.5, 0.25])
  clean = np.array([[0.0, LN3, 0.0], [LN2, 0.0, 0.0]])  # classes 1 and 0
  moved = np.array([[LN3, 0.0, 0.0], [0.0, 0.0, LN2]])  # classes 0 and 2
  # Of class 1 and class 0, as the clean images decided: 1/5 and 1/4 (not 3/5 and 1/2).
  np.testing.assert_allclose(robustness.decided_probability(moved, "multiclass", clean),
                             [0.2, 0.25])
  np.testing.assert_allclose(robustness.decided_probability(clean, "multiclass", clean),
                             [0.6, 0.5])


def test_binary_changes_at_an_operating_point_count_a_move_onto_the_cut_as_a_flip():
  clean = np.array([LN3, 0.5, 0.0, -LN3])
  moved = np.array([0.5, LN3, 0.0, LN3])
  # At 0.5: T F F F -> F T F T: images 0 (onto the cut), 1 (off it, above) and 3 flip.
  flips, change = robustness.changes(clean, moved, "binary", 0.5)
  assert flips.dtype == np.float64 and flips.tolist() == [1.0, 1.0, 0.0, 1.0]
  s = 1 / (1 + math.exp(-0.5))
  np.testing.assert_allclose(change, [0.75 - s, 0.75 - s, 0.0, 0.5])
  # At the default cut, 0: T T F F -> T T F T: image 3 only.
  assert robustness.changes(clean, moved, "binary")[0].tolist() == [0.0, 0.0, 0.0, 1.0]


def test_multiclass_changes_are_of_the_clean_class_even_when_the_decision_moves():
  clean = np.array([[0.0, LN3, 0.0], [LN2, 0.0, 0.0], [0.0, 0.0, LN3]])  # classes 1, 0, 2
  moved = np.array([[LN3, 0.0, 0.0], [LN2, 0.0, 0.0], [0.0, LN3, 0.0]])  # classes 0, 0, 1
  flips, change = robustness.changes(clean, moved, "multiclass")
  assert flips.tolist() == [1.0, 0.0, 1.0]
  # Image 0: class 1's 3/5 -> 1/5; image 1 unmoved; image 2: class 2's 3/5 -> 1/5.
  np.testing.assert_allclose(change, [0.4, 0.0, 0.4])


def test_multilabel_changes_are_each_images_means_over_its_own_labels():
  """2 images x 3 labels, cuts (0, log 3, 0): a label at its cut is not above it."""
  cuts = np.array([0.0, LN3, 0.0])
  clean = np.array([[LN3, LN3, 0.0], [-LN3, 0.0, LN3]])  # T F F / F F T
  moved = np.array([[LN3, 2.0, LN3], [-LN3, 0.0, LN3]])  # T T T / F F T
  flips, change = robustness.changes(clean, moved, "multilabel", cuts)
  np.testing.assert_allclose(flips, [2 / 3, 0.0])
  s2 = 1 / (1 + math.exp(-2.0))
  np.testing.assert_allclose(change, [(0.0 + (s2 - 0.75) + 0.25) / 3, 0.0])


def test_a_multiclass_condition_by_hand():
  clean = np.array([[LN3, 0.0, 0.0], [0.0, LN3, 0.0], [0.0, 0.0, LN3], [LN3, 0.0, 0.0]])
  moved = np.array([[LN3, 0.0, 0.0], [0.0, LN3, 0.0], [0.0, 0.0, LN3], [0.0, 0.0, LN2]])
  labels = np.array([0, 1, 2, 1])
  got = robustness.condition(clean, moved, labels, "multiclass", seed=5)
  # Moved decisions 0, 1, 2, 2 against labels 0, 1, 2, 1: 3 of 4 right; image 3 flips (0 -> 2)
  # and its clean class, 0, falls from 3/5 to 1/4 (class 2, the moved one, rose 1/5 -> 1/2).
  assert got["accuracy"] == pytest.approx(0.75)
  assert got["image_flips"] == [0.0, 0.0, 0.0, 1.0] and got["flip_rate"] == 0.25
  np.testing.assert_allclose(got["image_changes"], [0.0, 0.0, 0.0, 0.35], atol=1e-12)
  assert got["mean_abs_change"] == pytest.approx(0.0875)
  # One-vs-rest log-odds of the moved logits: each class' images above the others' (class 1's
  # image 3 at -log 3 over -log 4 twice; class 2's image 2 at log 3/2 over image 3's 0): AUC 1.
  assert got["auc"] == pytest.approx(1.0)
  assert got["auc"] == classification.multiclass_metrics(moved, labels)["auc"]


def _scores(task, n=40, seed=0):
  """Clean and moved logits and labels of `n` images, noisy enough that bootstrap intervals
  depend on the seed."""
  rng = np.random.default_rng(seed)
  if task == "multiclass":
    labels = rng.integers(0, 3, n)
    clean = rng.normal(0, 1, (n, 3)) + 1.5 * np.eye(3)[labels]
  else:
    labels = rng.integers(0, 2, (n, 2))
    labels[::7, 1] = -1  # some unknown
    clean = rng.normal(0, 1, (n, 2)) + 1.5 * (labels == 1)
  return clean, clean + rng.normal(0, 0.7, clean.shape), labels


@pytest.mark.parametrize("task,intervals", [
    ("multiclass", classification.multiclass_bootstrap_intervals),
    ("multilabel", classification.multilabel_bootstrap_intervals)])
def test_a_condition_has_evaluates_intervals_of_the_moved_logits_at_its_seed(task, intervals):
  clean, moved, labels = _scores(task)
  got = robustness.condition(clean, moved, labels, task, seed=5)
  want, other = intervals(moved, labels, seed=5), intervals(moved, labels, seed=0)
  assert got["auc_interval"] == list(want["auc"])
  assert got["accuracy_interval"] == list(want["accuracy"])
  assert list(other["auc"]) != list(want["auc"])  # so the seed is what was passed


def test_a_multilabel_condition_by_hand():
  """Accuracy as evaluate's (every known label at logit 0), flips at each label's own cut."""
  cuts = np.array([0.0, 1.0])
  clean = np.array([[2.0, 2.0], [-2.0, 0.5], [1.0, -1.0], [-1.0, 3.0]])
  moved = np.array([[2.0, 0.5], [-2.0, 0.5], [-1.0, -1.0], [-1.0, 3.0]])
  labels = np.array([[1, 1], [0, -1], [1, 0], [0, 1]])
  got = robustness.condition(clean, moved, labels, "multilabel", cuts, seed=0)
  # Known labels (7): at 0, image 0: T T vs 1 1 (2 right); image 1: F vs 0 (1); image 2: F F vs
  # 1 0 (1); image 3: F T vs 0 1 (2): 6 of 7.
  assert got["accuracy"] == pytest.approx(6 / 7)
  # At cuts (0, 1): image 0's label 1 (2 -> 0.5) and image 2's label 0 (1 -> -1) flip.
  assert got["image_flips"] == [0.5, 0.0, 0.5, 0.0] and got["flip_rate"] == 0.25
  # Their probabilities: sigmoid(2) - sigmoid(0.5), and sigmoid(1) - sigmoid(-1) = tanh(1/2),
  # each the mean over the image's 2 labels.
  sig = lambda z: 1 / (1 + math.exp(-z))
  np.testing.assert_allclose(got["image_changes"],
                             [(sig(2.0) - sig(0.5)) / 2, 0.0, math.tanh(0.5) / 2, 0.0])
  # Label 0: positives 2, -1 against negatives -2, -1: 3.5 of 4 pairs; label 1 (images 0, 2, 3):
  # 0.5 and 3 against -1: 2 of 2. Macro (0.875 + 1) / 2.
  assert got["auc"] == pytest.approx(0.9375)
  assert got["auc"] == classification.multilabel_metrics(moved, labels)["auc"]


def test_a_binary_condition_passes_its_seed_and_has_one_figure_per_image():
  clean = np.array([2.0, -1.0, 0.5, -3.0, 1.5, -0.5])
  moved = np.array([-1.0, -2.0, 1.0, 3.0, 1.2, -0.1])
  labels = np.array([1, 0, 1, 0, 1, 0])
  got = robustness.condition(clean, moved, labels, "binary", 0.0, seed=3)
  intervals = classification.bootstrap_intervals(moved, labels, 0.0, seed=3)
  assert got["accuracy_interval"] == list(intervals["accuracy"])
  assert got["auc_interval"] == list(intervals["auc"])
  # At 0: T F T F T F -> F F T T T F: images 0 and 3 flip.
  assert got["image_flips"] == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
  assert len(got["image_changes"]) == 6
  assert got["mean_abs_change"] == pytest.approx(np.mean(got["image_changes"]))
