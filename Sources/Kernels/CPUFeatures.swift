// CPUFeatures: what this processor's vector units can do, read with CPUID (and XGETBV, so that an
// extension the operating system does not enable counts as absent). Used to choose BLAS kernels.
import CCPUFeatures

public struct CPUFeatures: Equatable, Sendable, CustomStringConvertible {
    public var vendor: String          // "GenuineIntel", "AuthenticAMD", "" off x86
    public var family: Int             // display family and model (extended fields folded in)
    public var model: Int
    public var stepping: Int
    public var modelName: String       // the brand string, e.g. "Intel(R) Xeon(R) Processor"
    public var avx = false
    public var avx2 = false
    public var fma = false
    public var avx512f = false
    public var avx512bw = false
    public var avx512dq = false
    public var avx512vl = false
    public var avx512bf16 = false

    public init(vendor: String = "", family: Int = 0, model: Int = 0, stepping: Int = 0, modelName: String = "",
                avx: Bool = false, avx2: Bool = false, fma: Bool = false, avx512f: Bool = false,
                avx512bw: Bool = false, avx512dq: Bool = false, avx512vl: Bool = false, avx512bf16: Bool = false) {
        self.vendor = vendor; self.family = family; self.model = model; self.stepping = stepping
        self.modelName = modelName
        self.avx = avx; self.avx2 = avx2; self.fma = fma; self.avx512f = avx512f; self.avx512bw = avx512bw
        self.avx512dq = avx512dq; self.avx512vl = avx512vl; self.avx512bf16 = avx512bf16
    }

    /// The vector level these features support (the highest whose every extension is present).
    public var level: VectorLevel {
        let avx512 = avx512f && avx512bw && avx512dq && avx512vl && avx2 && fma
        if avx512 && avx512bf16 { return .avx512bf16 }
        if avx512 { return .avx512 }
        if avx2 && fma { return .avx2 }
        if avx { return .avx }
        return .baseline
    }

    /// "vendor family F model M stepping S": the key under which a verified kernel choice is remembered.
    public var signature: String { "\(vendor) family \(family) model \(model) stepping \(stepping)" }

    public var description: String {
        "\(modelName.isEmpty ? vendor : modelName) (family \(family), model \(model); \(level.label))"
    }

    /// This machine's features.
    public static let current: CPUFeatures = read()

    static func read() -> CPUFeatures {
        guard ccpu_is_x86() != 0 else { return CPUFeatures() }
        var r = [UInt32](repeating: 0, count: 4)
        func cpuid(_ leaf: UInt32, _ sub: UInt32 = 0) -> [UInt32]? {
            ccpu_cpuid(leaf, sub, &r) != 0 ? r : nil
        }
        func bit(_ v: UInt32, _ i: UInt32) -> Bool { v & (1 << i) != 0 }
        var f = CPUFeatures()
        guard let l0 = cpuid(0) else { return f }
        f.vendor = ascii([l0[1], l0[3], l0[2]])
        let maxLeaf = l0[0]
        let xcr0 = ccpu_xcr0()
        let osAVX = xcr0 & 0x6 == 0x6             // SSE and AVX state
        let osAVX512 = osAVX && xcr0 & 0xE0 == 0xE0  // opmask, ZMM_Hi256, Hi16_ZMM
        if let l1 = cpuid(1) {
            let eax = l1[0]
            let baseFamily = Int((eax >> 8) & 0xF), baseModel = Int((eax >> 4) & 0xF)
            f.stepping = Int(eax & 0xF)
            f.family = baseFamily == 0xF ? baseFamily + Int((eax >> 20) & 0xFF) : baseFamily
            f.model = baseFamily == 0x6 || baseFamily == 0xF ? baseModel + (Int((eax >> 16) & 0xF) << 4) : baseModel
            f.avx = osAVX && bit(l1[2], 28)
            f.fma = osAVX && bit(l1[2], 12)
        }
        if maxLeaf >= 7, let l7 = cpuid(7, 0) {
            f.avx2 = osAVX && bit(l7[1], 5)
            f.avx512f = osAVX512 && bit(l7[1], 16)
            f.avx512dq = osAVX512 && bit(l7[1], 17)
            f.avx512bw = osAVX512 && bit(l7[1], 30)
            f.avx512vl = osAVX512 && bit(l7[1], 31)
            if l7[0] >= 1, let l71 = cpuid(7, 1) { f.avx512bf16 = osAVX512 && bit(l71[0], 5) }
        }
        if let ext = cpuid(0x8000_0000), ext[0] >= 0x8000_0004 {
            var words: [UInt32] = []
            for leaf: UInt32 in 0x8000_0002 ... 0x8000_0004 { words += cpuid(leaf) ?? [0, 0, 0, 0] }
            f.modelName = ascii(words).trimmedOfSpaces
        }
        return f
    }

    private static func ascii(_ words: [UInt32]) -> String {
        var bytes: [UInt8] = []
        for w in words { for i in 0 ..< 4 { bytes.append(UInt8((w >> (8 * UInt32(i))) & 0xFF)) } }
        return String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    }
}

/// How wide a kernel set's (or a CPU's) vector arithmetic is, in the order OpenBLAS's x86 kernel
/// sets were added: a set uses the CPU fully when its level equals the CPU's.
public enum VectorLevel: Int, Comparable, Sendable {
    case baseline = 0       // SSE2/SSE3 (Prescott, Nehalem, ...)
    case avx = 1            // Sandybridge, Bulldozer
    case avx2 = 2           // AVX2 + FMA: Haswell, Zen
    case avx512 = 3         // AVX-512 F/BW/DQ/VL: SkylakeX
    case avx512bf16 = 4     // and AVX512-BF16: Cooperlake

    public static func < (a: VectorLevel, b: VectorLevel) -> Bool { a.rawValue < b.rawValue }

    public var label: String {
        switch self {
        case .baseline: return "SSE only"
        case .avx: return "AVX"
        case .avx2: return "AVX2+FMA"
        case .avx512: return "AVX-512"
        case .avx512bf16: return "AVX-512+BF16"
        }
    }
}

private extension String {
    var trimmedOfSpaces: String {
        var s = Substring(self)
        while s.first == " " { s.removeFirst() }
        while s.last == " " { s.removeLast() }
        return String(s)
    }
}
