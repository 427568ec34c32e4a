"""OFA's unified pretraining (spec §5.7): the pretraining examples, their negatives and masking, and the
``pretrain`` task and criterion that train on them."""
