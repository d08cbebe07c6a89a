"""Fitting a PRM or ORM: the tokenize, train and train_orm stages, and their progress reporting."""
