// swift-tools-version:6.0
// moe-dist: a distributed trainer for recurrent Mixture-of-Experts language models.
//
// Dependencies run one way:
//   C shims (CMPI, COpenBLAS, CHDF5, CCPUFeatures) and C kernels (CVectorKernels, CPackedGemm)
//     -> Threads (one joinable POSIX thread) -> Kernels, Collectives; Configuration, DataPipeline, HDF5
//     -> Model (parameters, recurrent block, router, dispatcher, experts)
//     -> Training (optimizer, schedule, loop, checkpoints, metrics)
//     -> Experiments (what runs wrote, read back: gates, replicates, comparisons, sweeps, benchmark)
//     -> moe-dist (command-line interface)
import PackageDescription

// Hot loops run over unsafe pointers; release builds drop the bounds checks there.
let fast: [SwiftSetting] = [.unsafeFlags(["-Ounchecked", "-wmo"], .when(configuration: .release))]

let package = Package(
    name: "moe-dist",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "moe-dist", targets: ["moe-dist"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
    ],
    targets: [
        // MARK: C shims over system libraries (found through pkg-config)
        .systemLibrary(name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi",
                       providers: [.apt(["libopenmpi-dev", "openmpi-bin"])]),
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CHDF5", path: "Sources/CHDF5", pkgConfig: "hdf5",
                       providers: [.apt(["libhdf5-dev"])]),
        // CPUID/XGETBV as static inline C (header only): which vector extensions this CPU has.
        .systemLibrary(name: "CCPUFeatures", path: "Sources/CCPUFeatures"),
        // The element-wise hot loops (activations, AdamW, sums of squares), built per vector level (SSE2,
        // AVX2, AVX-512) and chosen at run time; no FMA contraction, so every level gives the same bits.
        .target(name: "CVectorKernels", path: "Sources/CVectorKernels",
                cSettings: [.unsafeFlags(["-ffp-contract=off"])]),
        // Products against weights packed once and used many times (the experts' forward and input-gradient
        // products): AVX2 and AVX-512 micro-kernels, chosen at run time.
        .target(name: "CPackedGemm", path: "Sources/CPackedGemm", cSettings: [.unsafeFlags(["-O3"])]),
        // A non-escaping Swift closure called from another thread (Blas.parallel's worker pool).
        .target(name: "CSwiftClosure", path: "Sources/CSwiftClosure"),
        // One joinable POSIX thread (no C of its own): the worker pool's threads and ThreadWorld's ranks.
        .target(name: "Threads"),

        // MARK: Foundations: numeric kernels, communication, config, data, HDF5 files
        .target(name: "Kernels", dependencies: ["COpenBLAS", "CCPUFeatures", "CVectorKernels", "CPackedGemm", "CSwiftClosure", "Threads"], swiftSettings: fast),
        .target(name: "Collectives", dependencies: ["CMPI", "Threads"], swiftSettings: fast),
        .target(name: "Configuration", dependencies: [.product(name: "Yams", package: "Yams")]),
        .target(name: "DataPipeline", swiftSettings: fast),
        .target(name: "HDF5", dependencies: ["CHDF5"]),

        // MARK: The model: parameters, recurrent block, MoE layer with expert parallelism
        .target(name: "Model", dependencies: ["Kernels", "Collectives", "Configuration"], swiftSettings: fast),

        // MARK: Training: optimizer, schedule, loop, checkpoints, metrics history
        .target(name: "Training",
                dependencies: ["Model", "Kernels", "Collectives", "Configuration", "DataPipeline", "HDF5"],
                swiftSettings: fast),

        // MARK: Experiment management: reads what training writes (stage gates, replicates, sweeps, benchmark)
        .target(name: "Experiments",
                dependencies: ["Training", "Model", "Kernels", "Collectives", "Configuration", "HDF5"]),

        // MARK: Command-line interface
        .executableTarget(name: "moe-dist",
                          dependencies: ["Experiments", "Training", "Model", "Configuration", "DataPipeline", "Collectives", "HDF5",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser")],
                          path: "Sources/MoEDistCLI", swiftSettings: fast),

        // MARK: Tests
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        // Counts the heap allocations of the test process (replaces malloc and friends in the test binary).
        .target(name: "MallocCounter", path: "Tests/MallocCounter"),
        .testTarget(name: "KernelsTests", dependencies: ["Kernels", "CVectorKernels", "TestSupport"]),
        .testTarget(name: "CollectivesTests", dependencies: ["Collectives", "TestSupport"]),
        .testTarget(name: "ConfigurationTests", dependencies: ["Configuration", "TestSupport"]),
        .testTarget(name: "DataPipelineTests", dependencies: ["DataPipeline", "TestSupport"]),
        .testTarget(name: "HDF5Tests", dependencies: ["HDF5", "TestSupport"]),
        .testTarget(name: "ModelTests",
                    dependencies: ["Model", "Kernels", "Collectives", "Configuration", "TestSupport", "MallocCounter"]),
        .testTarget(name: "TrainingTests",
                    dependencies: ["Training", "Model", "Configuration", "DataPipeline", "HDF5", "TestSupport", "MallocCounter"]),
        .testTarget(name: "ExperimentsTests",
                    dependencies: ["Experiments", "Training", "Model", "Collectives", "Configuration", "TestSupport"]),
        .testTarget(name: "CLITests", dependencies: ["TestSupport", "HDF5"]),
    ],
    swiftLanguageModes: [.v5]
)
