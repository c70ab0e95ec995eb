# syntax=docker/dockerfile:1.7
# Container images for scalable. `scalable bootstrap` builds the `scalable` target (the notebook
# kernel's image), the `apptainer` target (converts Docker images to SIF files) and the model
# targets you choose, then converts each to <target>_container.sif:
#
#   scalable bootstrap --targets gcam,stitches        # or, by hand:
#   docker build --target gcam --tag scalable-gcam:bootstrap .
#
# Every download is pinned (image tags, package versions, git commits or release tags), so a
# rebuild gives the same image. Build from a scalable checkout: the context must hold the package
# (.dockerignore keeps the context to what the wheel needs).

ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm

# ---------------------------------------------------------------------------------------------
# base: Python with Dask; what every image shares
FROM ${PYTHON_IMAGE} AS base
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential ca-certificates curl git unzip \
 && rm -rf /var/lib/apt/lists/*
RUN python -m pip install \
        dask==2026.8.0 \
        distributed==2026.8.0 \
        dask-jobqueue==0.9.0 \
        bokeh==3.9.2 \
        pyyaml==6.0.3

# ---------------------------------------------------------------------------------------------
# wheel: this package built from the checkout (the JupyterLab extension needs Node to build,
# unless the checkout already holds it prebuilt in scalable/labextension)
FROM node:20.18.1-bookworm-slim AS wheel
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv git ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY . /src
RUN python3 -m venv /venv \
 && /venv/bin/pip install --no-cache-dir pip==24.3.1 \
 && /venv/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels /src

# ---------------------------------------------------------------------------------------------
# scalable: this package and ipykernel; the JupyterLab kernel runs in it, and models build on it
FROM base AS scalable
COPY --from=wheel /wheels /opt/wheels
RUN python -m pip install /opt/wheels/scalable-*.whl \
        ipykernel==7.4.0 \
        ipywidgets==8.1.9 \
 && python -c "import scalable, ipykernel, dask, distributed, dask_jobqueue"

# ---------------------------------------------------------------------------------------------
# apptainer: the converter; `docker run ... scalable-apptainer:bootstrap build out.sif docker-daemon://img`
FROM debian:12.8-slim AS apptainer
ARG APPTAINER_VERSION=1.3.6
ARG TARGETARCH=amd64
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && curl -fsSLo /tmp/apptainer.deb \
      "https://github.com/apptainer/apptainer/releases/download/v${APPTAINER_VERSION}/apptainer_${APPTAINER_VERSION}_${TARGETARCH}.deb" \
 && apt-get install -y --no-install-recommends /tmp/apptainer.deb \
 && rm -rf /tmp/apptainer.deb /var/lib/apt/lists/*
WORKDIR /work
ENTRYPOINT ["/usr/bin/apptainer"]

# ---------------------------------------------------------------------------------------------
# gcam: GCAM core (built from its release tag) with the gcamwrapper Python bindings
FROM scalable AS gcam
ARG GCAM_TAG=gcam-v7.0
ARG EIGEN_VERSION=3.4.0
ARG MODELINTERFACE_VERSION=v5.4
ARG GCAMWRAPPER_COMMIT=8f42208d13979edc89c934c2aee8d5d6d991623d
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jdk-headless libtbb-dev libboost-dev \
      libboost-filesystem-dev libboost-system-dev libboost-python-dev libboost-numpy-dev \
 && rm -rf /var/lib/apt/lists/*
RUN git clone --depth 1 --branch ${GCAM_TAG} https://github.com/JGCRI/gcam-core.git /gcam-core \
 && mkdir -p /gcam-core/libs \
 && curl -fsSL "https://gitlab.com/libeigen/eigen/-/archive/${EIGEN_VERSION}/eigen-${EIGEN_VERSION}.tar.gz" \
      | tar -xz -C /gcam-core/libs \
 && mv /gcam-core/libs/eigen-${EIGEN_VERSION} /gcam-core/libs/eigen \
 && curl -fsSLo /gcam-core/jars.zip \
      "https://github.com/JGCRI/modelinterface/releases/download/${MODELINTERFACE_VERSION}/jars.zip" \
 && cd /gcam-core && unzip -q jars.zip && rm jars.zip
ENV CXX="g++ -fPIC" \
    EIGEN_INCLUDE=/gcam-core/libs/eigen \
    BOOST_INCLUDE=/usr/include \
    BOOST_LIB=/usr/lib \
    TBB_INCLUDE=/usr/include \
    TBB_LIB=/usr/lib/x86_64-linux-gnu \
    JARS_LIB="/gcam-core/jars/*" \
    JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64 \
    JAVA_INCLUDE=/usr/lib/jvm/java-17-openjdk-amd64/include \
    JAVA_LIB=/usr/lib/jvm/java-17-openjdk-amd64/lib/server \
    GCAM_INCLUDE=/gcam-core/cvs/objects \
    GCAM_LIB=/gcam-core/cvs/objects/build/linux
RUN cd /gcam-core \
 && git submodule update --init --depth 1 cvs/objects/climate/source/hector \
 && make install_hector \
 && cd cvs/objects/build/linux && make -j 4 gcam \
 && cp /gcam-core/exe/gcam.exe /usr/local/bin/gcam
RUN python -m pip install \
        "gcamwrapper @ git+https://github.com/JGCRI/gcamwrapper.git@${GCAMWRAPPER_COMMIT}" \
        gcamreader==1.5.0

# ---------------------------------------------------------------------------------------------
# stitches: climate emulation from archived ESM runs
FROM scalable AS stitches
ARG STITCHES_COMMIT=1e7fad2da46f437c25246cfcf60603107191a3fe
RUN python -m pip install "stitches-emulate @ git+https://github.com/JGCRI/stitches.git@${STITCHES_COMMIT}" \
 && python -c "import stitches; stitches.install_package_data()"

# ---------------------------------------------------------------------------------------------
# rbase: R for the R-based models
FROM scalable AS rbase
RUN apt-get update \
 && apt-get install -y --no-install-recommends r-base r-base-dev r-cran-remotes \
      libcurl4-openssl-dev libssl-dev libxml2-dev \
 && rm -rf /var/lib/apt/lists/*

# osiris: crop yield emulation (an R package), pinned to a commit
FROM rbase AS osiris
ARG OSIRIS_COMMIT=49f3e203de9dcebef709e75f610b561fa4c6586b
RUN Rscript -e "remotes::install_github('JGCRI/osiris@${OSIRIS_COMMIT}', upgrade = 'never')" \
 && Rscript -e "library(osiris)"

# ---------------------------------------------------------------------------------------------
# hector: the simple climate model through pyhector
FROM scalable AS hector
RUN python -m pip install pyhector==3.2.0.0

# ---------------------------------------------------------------------------------------------
# xanthos: global hydrology
FROM scalable AS xanthos
RUN python -m pip install xanthos==2.4.1

# ---------------------------------------------------------------------------------------------
# demeter: land use and land cover disaggregation
FROM scalable AS demeter
ARG DEMETER_COMMIT=85c97e903bfbf89e4ba17f094c64e44d1907dfd6
RUN python -m pip install "demeter @ git+https://github.com/JGCRI/demeter.git@${DEMETER_COMMIT}"

# ---------------------------------------------------------------------------------------------
# tethys: water withdrawal and consumption downscaling
FROM scalable AS tethys
ARG TETHYS_COMMIT=fc39ec2143158671255cf72e026427126e6700cb
RUN python -m pip install "tethys @ git+https://github.com/JGCRI/tethys.git@${TETHYS_COMMIT}"

# ---------------------------------------------------------------------------------------------
# basd: bias adjustment and statistical downscaling
FROM scalable AS basd
ARG BASD_COMMIT=dc188d179cdcc6172c6962fff681c25431dee623
RUN python -m pip install "basd @ git+https://github.com/JGCRI/basd.git@${BASD_COMMIT}"
