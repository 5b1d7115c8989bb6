# The AWS Batch job image (profiles/aws-batch): the workflow, Snakemake with its S3
# storage and Batch executor plugins, and TensorFlow. Batch runs each job as
# `python -m snakemake ...` in /workflow, so everything a job reads at parse time (the
# Snakefile, rules, schemas, config files, labels and synsets files) must be in here.
#
#   docker build -t imgprep .
#   docker build -t imgprep-gpu --build-arg TENSORFLOW="tensorflow[and-cuda]==2.21.0" .
FROM python:3.11-slim

# CPU TensorFlow by default; the GPU queue's image takes the CUDA build instead
ARG TENSORFLOW=tensorflow-cpu==2.21.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /workflow

# Dependencies first: the layer is rebuilt only when a pin changes. The development
# tools of requirements.txt (pytest, ruff, snakefmt) stay out of the image.
COPY requirements.txt requirements-aws.txt ./
RUN grep -v -E '^(tensorflow-cpu|pytest|ruff|snakefmt)==' requirements.txt > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt -r requirements-aws.txt "$TENSORFLOW" \
    && rm /tmp/requirements.txt

COPY Snakefile config.yaml pyproject.toml ./
COPY rules/ rules/
COPY scripts/ scripts/
COPY schemas/ schemas/
COPY envs/ envs/
COPY profiles/ profiles/
COPY resources/ resources/

# jobs write their local copies of storage objects under /workflow/.snakemake
RUN useradd --create-home --uid 1000 imgprep && chown -R imgprep /workflow
USER imgprep

# Batch passes the job command; a bare `docker run` shows the versions
CMD ["python", "-m", "snakemake", "--version"]
