"""Windows to events: the scoring worker, label-set scores and the event tracker."""
