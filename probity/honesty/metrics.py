"""Detection metrics and cluster-bootstrap intervals of the honesty instrument; they live in
``probity.report.metrics``, which the other instruments share."""

from probity.report.metrics import auroc, balanced_accuracy, bootstrap, tpr_at_fpr  # noqa: F401  (honesty API)
