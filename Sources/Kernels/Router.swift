// The router's softmax top-k kernels (SPEC section 3, MoE FFN and losses): scores, selection and gates,
// and their backward with the aux and z terms' gradients added. The Router (Sources/Model/MoE) owns
// everything else about routing: logits, global statistics, losses, capacity.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Per token t: probs[t] = softmax(logits[t]); lse[t] = logsumexp(logits[t]);
/// topIndex[t, 0..<k] = the experts of the k largest probabilities in descending order, ties to the lower
/// expert index; gates[t, j] = probs[t, topIndex[t, j]], divided by Σ_j probs[t, topIndex[t, j]] when
/// `normalize && k > 1` (with k = 1 the gate is the probability itself, as in Switch).
public func routerForward(_ probs: UnsafeMutablePointer<Float>, _ lse: UnsafeMutablePointer<Float>,
                          _ topIndex: UnsafeMutablePointer<Int32>, _ gates: UnsafeMutablePointer<Float>,
                          _ logits: UnsafePointer<Float>, _ N: Int, _ E: Int, _ k: Int, normalize: Bool) {
    // probs and logits are (N,E), lse is (N), topIndex and gates are (N,k)
    precondition(E > 0 && k >= 1 && k <= E, "router: need 1 <= k (\(k)) <= E (\(E))")
    for t in 0 ..< N {
        let z = logits + t * E
        let p = probs + t * E
        let m = maxElement(z, E)
        var sum: Float = 0
        for e in 0 ..< E {
            let x = exp(z[e] - m)
            p[e] = x
            sum += x
        }
        let inv = 1 / sum
        for e in 0 ..< E { p[e] *= inv }
        lse[t] = m + log(sum)

        // top-k by repeated arg-max; strict '>' over ascending e keeps the lower index on ties
        let idx = topIndex + t * k
        let g = gates + t * k
        var chosenSum: Float = 0
        for j in 0 ..< k {
            var best = -1
            var bestP: Float = -1
            for e in 0 ..< E where p[e] > bestP {
                var taken = false
                for i in 0 ..< j where Int(idx[i]) == e { taken = true; break }
                if !taken { best = e; bestP = p[e] }
            }
            if best < 0 {   // only with NaN probabilities: take the lowest free index so indices stay valid
                best = (0 ..< E).first { e in !(0 ..< j).contains { Int(idx[$0]) == e } }!
                bestP = p[best]
            }
            idx[j] = Int32(best)
            g[j] = bestP
            chosenSum += bestP
        }
        if normalize && k > 1 {
            let invS = 1 / chosenSum
            for j in 0 ..< k { g[j] *= invS }
        }
    }
}

/// dlogits[N,E] OVERWRITTEN with the gradient of the loss wrt the router logits. Per token t:
/// 1. dP[e] = auxGrad[e] (or 0): the Switch aux term's constant dL/dP[t,e] = coef·E·f_e/N;
/// 2. for each slot j with expert e_j: dP[e_j] += (dg_j − Σ_i dg_i g_i)/S when `normalize && k > 1`
///    (S = Σ_i P[e_i], g_i = P[e_i]/S), else dP[e_j] += dg_j; dgates is 0 for dropped assignments;
/// 3. softmax backward dz = P ⊙ (dP − Σ_e P_e dP_e);
/// 4. z-loss zGrad·Σ_t lse[t]²: dz += zGrad · 2 · lse[t] · P.
public func routerBackward(_ dlogits: UnsafeMutablePointer<Float>, _ dgates: UnsafePointer<Float>,
                           _ probs: UnsafePointer<Float>, _ lse: UnsafePointer<Float>, _ topIndex: UnsafePointer<Int32>,
                           _ N: Int, _ E: Int, _ k: Int, normalize: Bool, auxGrad: UnsafePointer<Float>?, zGrad: Float) {
    // dlogits and probs are (N,E), lse is (N), dgates and topIndex are (N,k), auxGrad is (E)
    precondition(E > 0 && k >= 1 && k <= E, "router: need 1 <= k (\(k)) <= E (\(E))")
    for t in 0 ..< N {
        let p = probs + t * E
        let dP = dlogits + t * E   // dL/dP first, then turned into dL/dz in place
        let idx = topIndex + t * k
        let dg = dgates + t * k
        if let aux = auxGrad {
            for e in 0 ..< E { dP[e] = aux[e] }
        } else {
            for e in 0 ..< E { dP[e] = 0 }
        }
        if normalize && k > 1 {
            var S: Float = 0
            for j in 0 ..< k { S += p[Int(idx[j])] }
            let invS = 1 / S
            var dgDotG: Float = 0
            for j in 0 ..< k { dgDotG += dg[j] * p[Int(idx[j])] * invS }
            for j in 0 ..< k { dP[Int(idx[j])] += (dg[j] - dgDotG) * invS }
        } else {
            for j in 0 ..< k { dP[Int(idx[j])] += dg[j] }
        }
        let dot = dotProduct(p, dP, E)
        let zTerm = zGrad * 2 * lse[t]
        for e in 0 ..< E { dP[e] = p[e] * (dP[e] - dot + zTerm) }
    }
}
