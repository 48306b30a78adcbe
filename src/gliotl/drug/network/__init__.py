"""The drug-response network, its scikit-learn estimators and transfer policies."""
