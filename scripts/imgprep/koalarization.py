"""What Deep Koalarization's reader declares, in one place for the records, their
verification and the configuration (a module without imports: the config loads it).

``LabImageRecordReader`` (koalarization/dataset/tfrecords/images/lab_image_record.py)
parses ``image_l`` FixedLen [224 * 224], ``image_ab`` FixedLen [224 * 224 * 2] and
``image_embedding`` FixedLen [1001] (TF-slim Inception-ResNet-v2 logits, class 0 the
background); a record of any other size fails to parse.
"""

LAB_SIZE = 224
EMBEDDING = 1001
