# The aimesh image: aimesh-agent and meshctl on Debian 12 (bookworm), the
# image the Helm chart (helm/aimesh) deploys. docs/install.md#building-the-image
#
#   docker build -t ghcr.io/aimesh/aimesh:0.1.0 .
#
# Keep the tag equal to CMakeLists.txt's project VERSION and to
# helm/aimesh/Chart.yaml's appVersion: the chart pulls
# ghcr.io/aimesh/aimesh:<appVersion> unless image.tag says otherwise.

ARG DEBIAN_RELEASE=bookworm

# ---- build: the same packages as the 'build' section of scripts/install-deps.sh
FROM debian:${DEBIAN_RELEASE} AS build
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake make pkg-config git \
      clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev \
      libcli11-dev libfmt-dev libspdlog-dev nlohmann-json3-dev libyaml-cpp-dev libyaml-dev \
      libcpp-httplib-dev libcurl4-openssl-dev libssl-dev libbrotli-dev \
      libgtest-dev libgmock-dev libbenchmark-dev \
      libprotobuf-dev protobuf-compiler golang-github-prometheus-client-model-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The BPF objects are built first (Makefile.bpf) and embedded in the agent as
# skeletons; the loose .bpf.o files are shipped too, for bpftool and audits.
# Release at -O2, the level the test suite runs at: CMake's -O3 makes g++ 12
# report a false -Wrestrict inside std::string, fatal under the project's
# -Werror.
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_C_FLAGS_RELEASE="-O2 -DNDEBUG" -DCMAKE_CXX_FLAGS_RELEASE="-O2 -DNDEBUG" \
 && cmake --build /build --target aimesh-agent meshctl -j"$(nproc)" \
 && mkdir -p /out/bin /out/bpf \
 && install -m 0755 /build/aimesh-agent /build/meshctl /out/bin/ \
 && for src in bpf/*.bpf.c; do cp "/build/bpf/$(basename "$src" .c).o" /out/bpf/; done

# ---- runtime: shared libraries only, plus what the chart's bpffs init
# container runs (sh, stat, mount). The package list below is the only list
# of runtime packages: scripts/build-image.sh (the image CI builds without
# Docker) reads it from here (the names after the install command up to the
# line starting with "&&") and takes the LABELs below too.
FROM debian:${DEBIAN_RELEASE}-slim
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="aimesh" \
      org.opencontainers.image.description="aimesh-agent and meshctl: an eBPF L4 data plane for AI inference traffic" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libbpf1 libelf1 zlib1g libfmt9 libspdlog1.10 libyaml-cpp0.7 libyaml-0-2 \
      libcurl4 libssl3 libprotobuf32 ca-certificates \
      util-linux mount \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/bin/ /usr/local/bin/
COPY --from=build /out/bpf/ /usr/lib/aimesh/bpf/
# Root: loading BPF programs needs CAP_BPF/CAP_NET_ADMIN/...; the chart
# grants exactly those and drops the rest.
USER 0
ENTRYPOINT ["aimesh-agent"]
